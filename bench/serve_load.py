"""Load test for `codetune serve`: N concurrent clients for a bounded time against a real uvicorn server,
with request batching off (max_batch_size 1) and on (max_batch_size 8). Records requests/s, completion
tokens/s and p50/p99 latency per setting in bench/results/serve_load.json. Any failed request fails the run.

    python bench/serve_load.py                       # builds a tiny StarCoder2 model first
    python bench/serve_load.py --model models/tiny --clients 16 --duration-s 30

Each client sends one completion after another (greedy, `--max-tokens` tokens, prompts of varied length);
a client that is mid-request when time is up finishes it and the request counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

PROMPTS = [
    "def fibonacci(n):\n    ",
    "import os\nimport sys\n\n\ndef main(argv):\n    ",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ",
    "# Return the n-th prime number\ndef nth_prime(n: int) -> int:\n",
    "SELECT name FROM singer WHERE",
    "for i in range(10):\n    if i % 2 == 0:\n        ",
]


def start_server(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


async def drive(url: str, clients: int, duration_s: float, max_tokens: int, progress) -> list[dict]:
    import httpx

    records: list[dict] = []
    stop_at = time.monotonic() + duration_s

    async def client(k: int) -> None:
        async with httpx.AsyncClient(timeout=300) as http:
            i = k
            while time.monotonic() < stop_at:
                body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
                started = time.perf_counter()
                try:
                    r = await http.post(f"{url}/v1/completions", json=body)
                    ok = r.status_code == 200
                    tokens = r.json()["usage"]["completion_tokens"] if ok else 0
                    error = None if ok else r.text[:200]
                except httpx.HTTPError as exc:
                    ok, tokens, error = False, 0, repr(exc)
                records.append({"latency_s": time.perf_counter() - started, "ok": ok, "tokens": tokens,
                                "error": error})
                i += clients

    async def ticker() -> None:
        while time.monotonic() < stop_at:
            progress(len(records))
            await asyncio.sleep(0.5)

    await asyncio.gather(ticker(), *(client(k) for k in range(clients)))
    return records


def summarize(records: list[dict], wall_s: float, stats: dict) -> dict:
    latencies = sorted(r["latency_s"] for r in records if r["ok"])
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    tokens = sum(r["tokens"] for r in records)
    return {
        "requests": len(records), "failed": sum(not r["ok"] for r in records), "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(records) / wall_s, 2), "completion_tokens_per_s": round(tokens / wall_s, 1),
        "latency_p50_ms": round(q[49] * 1000, 1), "latency_p99_ms": round(q[98] * 1000, 1),
        "generate_calls": stats["batches"],
        "mean_sequences_per_call": round(stats["submitted"] / max(1, stats["batches"]), 2),
        "largest_batch": stats["largest_batch"],
    }


def one_setting(model, tokenizer, max_batch_size: int, args, progress) -> dict:
    from codetune.serve.app import create_app
    from codetune.serve.engine import TransformersEngine

    engine = TransformersEngine(model, tokenizer, "bench", max_batch_size=max_batch_size,
                                batch_wait_ms=args.batch_wait_ms)
    url, server, thread = start_server(create_app(engine, max_tokens_cap=args.max_tokens))
    try:
        asyncio.run(drive(url, 1, 0.01, 4, lambda n: None))  # warm-up: first-call allocations
        before = engine.snapshot()
        started = time.perf_counter()
        records = asyncio.run(drive(url, args.clients, args.duration_s, args.max_tokens, progress))
        wall = time.perf_counter() - started
        after = engine.snapshot()
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    stats = {k: after[k] - before[k] for k in ("batches", "submitted")}
    stats["largest_batch"] = after["largest_batch"]
    result = {"max_batch_size": max_batch_size, **summarize(records, wall, stats)}
    result["errors"] = sorted({r["error"] for r in records if not r["ok"]})[:5]
    return result


def build_tiny(out: Path) -> Path:
    from codetune.init_model import default_corpus, init_model

    init_model("starcoder2", "tiny", [default_corpus() / "json", default_corpus() / "collections"], out,
               vocab_size=2048, max_corpus_mb=4, seed=0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model directory (default: build a tiny StarCoder2 in a temp dir)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="CPU intra-op threads; 1 avoids spin-wait contention on a tiny model and a busy CPU")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = parser.parse_args()

    import torch
    from rich.progress import Progress
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.modeling import device_kind

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_tiny(Path(tmp) / "tiny")
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval().to(device_kind())
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        results = []
        with Progress() as bar:
            for size in args.batch_sizes:
                task = bar.add_task(f"max_batch_size {size}", total=args.duration_s)
                t0 = time.monotonic()

                def progress(n: int, task=task, t0=t0, size=size) -> None:
                    bar.update(task, completed=min(args.duration_s, time.monotonic() - t0),
                               description=f"max_batch_size {size}: {n} requests")

                results.append(one_setting(model, tokenizer, size, args, progress))
                bar.update(task, completed=args.duration_s)
        n_params = sum(p.numel() for p in model.parameters())

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}")
    report = {
        "device": device, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "model": {"path": args.model or "tiny StarCoder2 built by the script", "parameters": n_params,
                  "architecture": model.config.model_type},
        "settings": {"clients": args.clients, "duration_s": args.duration_s, "max_tokens": args.max_tokens,
                     "batch_wait_ms": args.batch_wait_ms, "temperature": 0,
                     "torch_threads": torch.get_num_threads(), "prompts": len(PROMPTS)},
        "results": results,
    }
    if len(results) >= 2 and results[0]["requests_per_s"]:
        speedup = results[-1]["requests_per_s"] / results[0]["requests_per_s"]
        report["batching_speedup_requests_per_s"] = round(speedup, 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for r in results:
        print(f"max_batch_size {r['max_batch_size']}: {r['requests']} requests ({r['failed']} failed), "
              f"{r['requests_per_s']} req/s, {r['completion_tokens_per_s']} tok/s, "
              f"p50 {r['latency_p50_ms']} ms, p99 {r['latency_p99_ms']} ms, {r['mean_sequences_per_call']} seq/call")
    print(f"wrote {args.out}")
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
