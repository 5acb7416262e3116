"""Benchmark `codetune prepare` on a JDK's Java sources (lib/src.zip, ~15k files) against a plain
`datasets.map` tokenize-and-chunk baseline (the `run_clm` recipe: tokenize, append EOS, concatenate,
cut into seq_len blocks, no filtering, dedup, FIM or split), both in the same run, same tokenizer,
same worker count. Writes bench/results/prepare.json.

    python bench/prepare.py                    # finds a JDK src.zip that resolves
    python bench/prepare.py --src /path/src.zip --num-proc 2 --seq-len 1024

The tokenizer is built by `codetune init-model` (a byte-level BPE trained on the same zip), as a user
without hub access would. Each run is a fresh subprocess, so both pay their own start-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"


def find_src_zip() -> Path:
    """A JDK src.zip that resolves (some are dangling links), the one with the most Java files."""
    candidates = []
    for pattern in ("/usr/lib/jvm/*/lib/src.zip", "/usr/lib/jvm/*/src.zip", "/opt/*/lib/src.zip"):
        for path in glob.glob(pattern):
            real = Path(path).resolve()
            if real.is_file():
                candidates.append((real.stat().st_size, Path(path)))
    if not candidates:
        sys.exit("no JDK src.zip found; pass --src")
    return max(candidates)[1]


def device() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(mem_kb / 1e6, 1),
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()[0]}


def baseline(src: str, model: str, seq_len: int, num_proc: int, out: str) -> None:
    """The plain recipe, run in its own process: read .java members, tokenize with datasets.map, chunk."""
    import zipfile

    import datasets
    from transformers import AutoTokenizer

    start = time.perf_counter()
    datasets.disable_progress_bars()
    with zipfile.ZipFile(src) as zf:
        texts = [zf.read(n).decode("utf-8", errors="replace") for n in zf.namelist() if n.endswith(".java")]
    nbytes, files = sum(len(t.encode("utf-8")) for t in texts), len(texts)
    tokenizer = AutoTokenizer.from_pretrained(model)
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    def chunk(batch):
        flat = [t for ids in batch["input_ids"] for t in ids]
        usable = len(flat) // seq_len * seq_len
        blocks = [flat[i : i + seq_len] for i in range(0, usable, seq_len)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    ds = datasets.Dataset.from_dict({"text": texts})
    del texts
    ds = ds.map(tokenize, batched=True, num_proc=num_proc, remove_columns=["text"])
    import pyarrow.compute as pc

    tokens = pc.sum(pc.list_value_length(ds.data.column("input_ids"))).as_py()
    ds = ds.map(chunk, batched=True, batch_size=1000, num_proc=num_proc)
    ds.save_to_disk(out)
    print(json.dumps({"wall_s_inside": time.perf_counter() - start, "files": files,
                      "bytes": nbytes, "tokens": tokens, "sequences": ds.num_rows,
                      "tokens_dropped_in_block_remainders": tokens - ds.num_rows * seq_len}))


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS in MB of the process or any worker it waited for)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    return wall, stdout, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=None, help="JDK src.zip (default: find one)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--num-proc", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tokenizer-mb", type=float, default=16.0, help="Corpus MB for the BPE tokenizer")
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a temp dir)")
    parser.add_argument("--baseline-only", nargs=4, metavar=("SRC", "MODEL", "OUT", "NUM_PROC"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        src, model, out, num_proc = args.baseline_only
        baseline(src, model, args.seq_len, int(num_proc), out)
        return

    src = args.src or find_src_zip()
    work = args.work or Path(tempfile.mkdtemp(prefix="codetune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    codetune = [sys.executable, "-m", "codetune"]
    model = work / "model"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    init_s, _, _ = timed(codetune + ["init-model", "--arch", "starcoder2", "--size", "tiny", "--corpus", str(src),
                                  "--out", str(model), "--max-corpus-mb", str(args.tokenizer_mb)], env)
    config = work / "prepare.yaml"
    config.write_text(
        f"name: jdk-bench\noutput_dir: {work / 'run'}\nmodel:\n  name_or_path: {model}\n"
        f"data:\n  sources:\n    - path: {src}\n      languages: [java]\n  seq_len: {args.seq_len}\n"
        f"  fim_rate: 0.5\n  valid_fraction: 0.02\n  num_proc: {args.num_proc}\n"
    )
    dev = device()
    prepare_cmd = codetune + ["prepare", str(config)]
    prep_s, prep_out, prep_rss = timed(prepare_cmd, env)
    report = json.loads((work / "run" / "data" / "prepare_report.json").read_text())
    base_cmd = [sys.executable, __file__, "--seq-len", str(args.seq_len), "--baseline-only", str(src), str(model),
                str(work / "baseline"), str(args.num_proc)]
    base_s, base_out, base_rss = timed(base_cmd, env)
    base = json.loads(base_out.strip().splitlines()[-1])

    dev["load_avg_at_end"] = os.getloadavg()[0]  # other jobs on the machine skew both runs alike
    mb = report["bytes"]["seen"] / 1e6
    result = {
        "what": "codetune prepare vs plain datasets.map tokenize-and-chunk on a JDK src.zip",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": dev,
        "command": f"python bench/prepare.py --src {src} --seq-len {args.seq_len} --num-proc {args.num_proc}",
        "input": {"src_zip": str(src), "files": report["files"]["seen"], "mb_unpacked": round(mb, 1)},
        "tokenizer": {"built_by": "codetune init-model --arch starcoder2 --size tiny", "init_model_wall_s":
                      round(init_s, 1), "vocab_size": report["tokenizer"]["vocab_size"]},
        "codetune_prepare": {
            "command": " ".join(["codetune", "prepare", str(config)]),
            "wall_s": round(prep_s, 1), "mb_per_s": round(mb / prep_s, 2), "inside_time_s": report["time_s"],
            "peak_rss_mb": round(prep_rss),
            "timings_s": report["timings_s"], "files_kept": report["files"]["kept"],
            "dropped": {k: v for k, v in report["files"]["dropped"].items() if v},
            "dedup": report["dedup"], "decontaminated": report["decontamination"]["dropped"],
            "tokens_total": report["tokens_total"], "sequences": report["sequences"],
            "padding_fraction": report["padding_fraction"], "fim_applied": report["fim"]["applied"],
            "summary": prep_out.strip().splitlines()[-1],
        },
        "baseline_datasets_map": {
            "command": " ".join(base_cmd), "wall_s": round(base_s, 1),
            "mb_per_s": round(base["bytes"] / 1e6 / base_s, 2), "files": base["files"], "peak_rss_mb": round(base_rss),
            "inside_time_s": round(base["wall_s_inside"], 1), "tokens": base["tokens"],
            "sequences": base["sequences"], "tokens_dropped": base["tokens_dropped_in_block_remainders"],
        },
        "slowdown_vs_baseline": round(prep_s / base_s, 2),
        "num_proc": args.num_proc,
        "seq_len": args.seq_len,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("codetune_prepare", "baseline_datasets_map", "slowdown_vs_baseline")},
                     indent=2))


if __name__ == "__main__":
    main()
