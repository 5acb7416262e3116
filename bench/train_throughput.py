"""Training speed, side by side: the official fine-tuning scripts' recipe against codetune's defaults on the
same model, data and device, and each of codetune's optimizations switched on alone.

    python bench/train_throughput.py --device cpu --output bench/results/train_throughput_cpu.json
    python bench/train_throughput.py --device cuda --output bench/results/train_throughput_cuda.json

- baseline: the recipe of the StarCoder/StarCoder2 fine-tuning scripts (HF `Trainer`, one example per
  file truncated to the sequence length and padded up to it, eager attention, transformers' loss,
  un-fused AdamW, the model's default `use_cache`);
- defaults: codetune's `CodetuneTrainer` (packed rows, positions restarting per document, block-diagonal
  causal attention, `use_cache=False`), SDPA, fused AdamW, chunked cross-entropy;
- +packing, +sdpa, +fused_adamw, +chunked_ce, +compile: the baseline with one switch turned on.

Data: real code with natural file lengths (Python standard library files), tokenized by a byte-level BPE
trained in-process, so nothing is downloaded. Models: random weights of real architectures (a tiny
StarCoder2 on CPU; StarCoder2-3B- and GPT-2-124M-shaped, full and LoRA, on CUDA). Every configuration
trains from the same initial weights for the same number of useful (labelled) tokens, in its own
process (so peak memory is its own), then reports the loss on the same held-out files: speed must not
change what is learned. Baseline and defaults are measured interleaved (ABAB...) so that load from
other processes hits both; figures are medians over repeats.

Imports only torch, transformers, tokenizers, numpy (and peft for LoRA) and codetune's pure modules (no
datasets, no pydantic), so it runs on a bare GPU box. On an H100/H200 the four CUDA models take roughly half
an hour at the default repeats; `--models gpt2-124m-full` alone takes a few minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = {"packing": False, "attn": "eager", "fused_adamw": False, "chunked_ce": False, "compile": False,
            "trainer": "hf"}
DEFAULTS = {"packing": True, "attn": "sdpa", "fused_adamw": True, "chunked_ce": True, "compile": False,
            "trainer": "codetune"}
SINGLES = {
    "+packing": {"packing": True, "trainer": "codetune"},  # use_cache=False is what makes packing correct
    "+sdpa": {"attn": "sdpa"},
    "+fused_adamw": {"fused_adamw": True},
    "+chunked_ce": {"chunked_ce": True, "trainer": "codetune"},
    "+compile": {"compile": True},
}
# model name -> (architecture source, method, micro-batch, seq_len, useful tokens per run, learning rate)
CPU_MODELS = {"starcoder2-tiny": ("tiny", "full", 8, 512, 49_152, 1e-3)}
GPU_MODELS = {  # micro-batch 2 for 3B: the eager baseline keeps 30 x 24 x 2048^2 fp32 probabilities per row
    "starcoder2-3b-full": ("bigcode/starcoder2-3b", "full", 2, 2048, 262_144, 1e-5),
    "starcoder2-3b-lora": ("bigcode/starcoder2-3b", "lora", 2, 2048, 262_144, 2e-4),
    "gpt2-124m-full": ("gpt2", "full", 16, 1024, 524_288, 1e-4),
    "gpt2-124m-lora": ("gpt2", "lora", 16, 1024, 524_288, 2e-4),
}
WARMUP_STEPS = 3
HELDOUT_FILES = 24


# ---- data, built once in the parent ---------------------------------------------------------------------

def stdlib_files(limit: int, seed: int) -> list[str]:
    """Decodable .py files of the standard library in a seeded order (their natural lengths)."""
    paths = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    paths = [p for p in paths if "site-packages" not in p.parts]
    random.Random(seed).shuffle(paths)
    texts = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            texts.append(text)
        if len(texts) >= limit:
            break
    return texts


def build_data(work: Path, seq_len: int, files: int, seed: int) -> dict:
    """Tokenizer, padded rows (baseline), packed rows (codetune) and held-out files, saved under `work`."""
    from codetune.data.packing import pack
    from codetune.init_model import train_tokenizer

    texts = stdlib_files(files + HELDOUT_FILES + 400, seed)
    tokenizer = train_tokenizer(texts[files + HELDOUT_FILES :], vocab_size=8192)  # not the training files
    tokenizer.save_pretrained(work / "tokenizer")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    docs = [np.asarray(ids + [eos], dtype=np.int32) for ids in tokenizer(texts[:files])["input_ids"]]
    # whole held-out files in seq_len windows (at most 4 per file): neither file heads, which the truncating
    # baseline trains on, nor the stream the packed configurations see
    heldout = [ids[i : i + seq_len] for ids in tokenizer(texts[files : files + HELDOUT_FILES])["input_ids"]
               for i in range(0, min(len(ids), 4 * seq_len), seq_len) if len(ids) - i > 1]

    n = len(docs)
    padded_ids = np.full((n, seq_len), pad, dtype=np.int32)
    mask = np.zeros((n, seq_len), dtype=np.int32)
    for i, d in enumerate(docs):
        d = d[:seq_len]
        padded_ids[i, : len(d)] = d
        mask[i, : len(d)] = 1
    padded_labels = np.where(mask == 1, padded_ids, -100).astype(np.int32)
    packed = pack([(d, 0) for d in docs], [], seq_len, pad)
    np.savez(work / "data.npz", padded_ids=padded_ids, padded_mask=mask, padded_labels=padded_labels,
             packed_ids=packed.input_ids, packed_labels=packed.labels, packed_pos=packed.position_ids)
    (work / "heldout.json").write_text(json.dumps(heldout))
    lengths = [len(d) for d in docs]
    return {
        "files": n, "tokens": int(sum(lengths)), "median_file_tokens": int(statistics.median(lengths)),
        "files_longer_than_seq_len": sum(length > seq_len for length in lengths),
        "padded_rows": n, "padded_useful_fraction": round(float(mask.mean()), 4),
        "packed_rows": packed.rows, "packed_useful_fraction": round(1 - packed.padding_fraction, 4),
        "vocab": len(tokenizer),
    }


def build_model(work: Path, name: str, source: str, vocab: int, eos: int, pad: int) -> Path:
    """Seeded random weights of the architecture, saved once so every configuration starts from them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = work / name
    if out.exists():
        return out
    if source == "tiny":
        from codetune.init_model import build_config

        config = build_config("starcoder2", "tiny", vocab, eos, pad)
    else:
        from codetune.plan.known_configs import KNOWN_CONFIGS

        raw = dict(KNOWN_CONFIGS[source])
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
        config.eos_token_id = config.bos_token_id = eos
        config.pad_token_id = pad
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


# ---- one configuration, in its own process -------------------------------------------------------------

def rows_for(data, packing: bool) -> list[dict]:
    if packing:
        return [{"input_ids": i, "labels": lab, "position_ids": p}
                for i, lab, p in zip(data["packed_ids"], data["packed_labels"], data["packed_pos"], strict=True)]
    return [{"input_ids": i, "attention_mask": m, "labels": lab}
            for i, m, lab in zip(data["padded_ids"], data["padded_mask"], data["padded_labels"], strict=True)]


def stack(features: list[dict]) -> dict:
    import torch

    return {k: torch.as_tensor(np.stack([f[k] for f in features]), dtype=torch.long) for k in features[0]}


def heldout_loss(model, heldout: list[list[int]], device: str) -> float:
    """Token-weighted mean loss over the held-out windows, each alone (no padding, no packing)."""
    import torch

    from codetune.train.throughput import base_model

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for ids in heldout:
            x = torch.tensor([ids], device=device)
            loss = base_model(model)(input_ids=x, labels=x, use_cache=False).loss
            total += float(loss) * (len(ids) - 1)
            count += len(ids) - 1
    return total / count


def run_one(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, set_seed

    from codetune.train.throughput import ThroughputMeter, model_flops_per_token
    from codetune.train.trainer import CodetuneTrainer

    torch.set_num_threads(spec["threads"])
    cuda = spec["device"] == "cuda"
    set_seed(0)
    data = np.load(spec["work"] + "/data.npz")
    rows = rows_for(data, spec["packing"])
    full = spec["method"] == "full"
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], attn_implementation=spec["attn"],
        dtype=torch.float32 if full or not cuda else torch.bfloat16)  # what `codetune train` loads
    if not full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    if cuda:
        model = model.cuda()
    model.train()
    per_row = float(np.mean([(r["labels"] != -100).sum() for r in rows]))
    steps = WARMUP_STEPS + max(1, round(spec["useful_tokens"] / (per_row * spec["micro_batch"])))

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec["micro_batch"], max_steps=steps,
            learning_rate=spec["lr"], lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
            optim="adamw_torch_fused" if spec["fused_adamw"] else "adamw_torch", torch_compile=spec["compile"],
            logging_steps=10**6, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            bf16=cuda, use_cpu=not cuda, seed=0, data_seed=0, dataloader_num_workers=0,
        )
        meter = ThroughputMeter()
        if spec["trainer"] == "hf":
            class MeteredTrainer(Trainer):
                def training_step(self, model, inputs, num_items_in_batch=None):
                    meter.count(inputs["labels"])
                    return super().training_step(model, inputs, num_items_in_batch)

            trainer = MeteredTrainer(model=model, args=args, train_dataset=rows, data_collator=stack)
        else:
            trainer = CodetuneTrainer(model=model, args=args, train_dataset=rows, data_collator=stack,
                                      run_dir=Path(tmp), keep_last=1, fused_loss=spec["chunked_ce"])
            meter = trainer.throughput
        clock: dict = {}

        def now():
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter(), time.process_time()

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == WARMUP_STEPS:
                    clock["start"], clock["useful"] = now(), meter.total()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()

            def on_train_end(self, args, state, control, **kwargs):
                clock["end"] = now()

        trainer.add_callback(Clock())
        trainer.train()
    seconds = clock["end"][0] - clock["start"][0]
    cpu_seconds = clock["end"][1] - clock["start"][1]
    useful = meter.total() - clock["useful"]
    rate = useful / seconds
    flops = model_flops_per_token(model, rows[0]["input_ids"].shape[0])
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "useful_tokens_per_s": rate, "useful_tokens_per_cpu_s": useful / cpu_seconds,
        "mfu": rate * flops / spec["peak_flops"], "peak_memory_mb": peak_mb,
        "measured_steps": steps - WARMUP_STEPS, "useful_tokens_trained": meter.total(),
        "heldout_loss": heldout_loss(model, json.loads(Path(spec["work"], "heldout.json").read_text()),
                                     spec["device"]),
        "flops_per_token": flops,
    }


# ---- the whole comparison ------------------------------------------------------------------------------

def child(spec: dict) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"], "repeats": 0}
    keys = ("useful_tokens_per_s", "useful_tokens_per_cpu_s", "mfu", "peak_memory_mb", "heldout_loss")
    out = {k: statistics.median(r[k] for r in ok) for k in keys}
    out["useful_tokens_per_s_runs"] = [round(r["useful_tokens_per_s"], 1) for r in ok]
    out["useful_tokens_trained"] = ok[0]["useful_tokens_trained"]
    out["repeats"] = len(ok)
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.machine()} CPU ({os.cpu_count()} cores)"


def markdown_table(results: dict) -> str:
    """The README table of one results file."""
    lines = []
    for name, entry in results["models"].items():
        lines += [f"**{name}** ({entry['method']}, micro-batch {entry['micro_batch']} x {entry['seq_len']} tokens, "
                  f"{results['device']}; defaults {entry.get('speedup', 'n/a')}x baseline)", "",
                  "| configuration | useful tokens/s | speedup | MFU | peak memory (MB) | held-out loss |",
                  "|---|---:|---:|---:|---:|---:|"]
        for cname, c in entry["configs"].items():
            if "error" in c:
                lines.append(f"| {cname} | failed: {c['error']} | | | | |")
                continue
            lines.append(f"| {cname} | {c['useful_tokens_per_s']:,.0f} | {c.get('speedup_vs_baseline', 0):.2f}x | "
                         f"{100 * c['mfu']:.1f}% | {c['peak_memory_mb']:,.0f} | {c['heldout_loss']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--repeats", type=int, help="runs of baseline and defaults, interleaved (cpu 5, cuda 2)")
    parser.add_argument("--single-repeats", type=int, help="runs of each one-switch configuration (cpu 3, cuda 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (CPU)")
    parser.add_argument("--files", type=int, default=600, help="training files")
    parser.add_argument("--skip", nargs="*", default=[], help="configurations to leave out, e.g. +compile")
    parser.add_argument("--models", nargs="*", help="subset of the device's models")
    parser.add_argument("--useful-tokens", type=int, help="override the per-model useful-token budget")
    parser.add_argument("--table", type=Path, help="print the markdown table of a results file and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text(encoding="utf-8"))))
        return
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return
    import torch

    from codetune.train.throughput import measured_peak_flops

    cuda = args.device == "cuda"
    args.repeats = args.repeats or (2 if cuda else 5)
    args.single_repeats = args.single_repeats or (1 if cuda else 3)
    output = args.output or ROOT / f"bench/results/train_throughput_{args.device}.json"
    models = GPU_MODELS if args.device == "cuda" else CPU_MODELS
    if args.models:
        models = {k: v for k, v in models.items() if k in args.models}
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        peak = max(measured_peak_flops("cuda", dtype) for _ in range(3))
        device_name, peak_what = torch.cuda.get_device_name(0), f"measured {dtype} matmul (8192^3)"
    else:
        # the best of several tries: other processes only ever slow a measurement down
        peak = max(measured_peak_flops.__wrapped__("cpu", "float32", args.threads) for _ in range(5))
        device_name = f"{cpu_model()}, {args.threads} torch thread(s)"
        peak_what = "measured fp32 GEMM (1024^3)"
    configs = {"baseline": BASELINE, "defaults": DEFAULTS}
    configs.update({k: {**BASELINE, **v} for k, v in SINGLES.items() if k not in args.skip})
    results: dict = {
        "bench": "train_throughput", "device": device_name, "device_kind": args.device,
        "date": datetime.date.today().isoformat(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__, "peak_flops": peak, "peak_flops_source": peak_what,
        "repeats": args.repeats, "single_repeats": args.single_repeats, "warmup_steps": WARMUP_STEPS, "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_stats: dict[int, dict] = {}
        for name, (source, method, micro, seq_len, useful, lr) in models.items():
            useful = args.useful_tokens or useful
            data_dir = work / f"seq{seq_len}"
            data_dir.mkdir(exist_ok=True)
            if seq_len not in data_stats:
                data_stats[seq_len] = build_data(data_dir, seq_len, args.files, seed=0)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
            model_dir = build_model(work, source.replace("/", "_"), source, len(tok), tok.eos_token_id,
                                    tok.pad_token_id)
            base = {"work": str(data_dir), "model_dir": str(model_dir), "device": args.device, "method": method,
                    "micro_batch": micro, "useful_tokens": useful, "lr": lr, "threads": args.threads,
                    "peak_flops": peak}
            runs: dict[str, list] = {k: [] for k in configs}
            for r in range(args.repeats):
                for cname, cfg in configs.items():  # A B A B ...: baseline then defaults, then the singles
                    if cname not in ("baseline", "defaults") and r >= args.single_repeats:
                        continue
                    result = child({**base, **cfg})
                    runs[cname].append(result)
                    shown = result.get("error") or f"{result['useful_tokens_per_s']:.0f} useful tok/s"
                    print(f"[{name} {r + 1}/{args.repeats}] {cname}: {shown}", flush=True)
            table = {k: {**configs[k], **median_of(v)} for k, v in runs.items()}
            b, d = table["baseline"], table["defaults"]
            entry = {"method": method, "micro_batch": micro, "seq_len": seq_len, "learning_rate": lr,
                     "useful_tokens_budget": useful, "data": data_stats[seq_len], "configs": table}
            if "error" not in b and "error" not in d:
                entry["speedup"] = round(d["useful_tokens_per_s"] / b["useful_tokens_per_s"], 3)
                per_repeat = [x["useful_tokens_per_s"] / y["useful_tokens_per_s"]
                              for x, y in zip(runs["defaults"], runs["baseline"], strict=True)
                              if "error" not in x and "error" not in y]
                entry["speedup_per_repeat"] = [round(s, 3) for s in per_repeat]
                for v in table.values():
                    if "error" not in v:
                        v["speedup_vs_baseline"] = round(v["useful_tokens_per_s"] / b["useful_tokens_per_s"], 3)
            results["models"][name] = entry
            print(f"{name}: defaults {entry.get('speedup', 'n/a')}x baseline (useful tokens/s)", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
