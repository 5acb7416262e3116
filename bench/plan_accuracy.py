"""Check `codetune plan`'s memory formula against the real peak on a GPU.

For a grid of configurations (GPT-2 124M, CodeGen-350M and StarCoder2-3B shapes with random weights;
full, LoRA and QLoRA; sequence 512 to 2048; with and without gradient checkpointing) each run trains three
steps the way HF Trainer does (bf16 weights, bf16 autocast, fused AdamW, dropout on, micro-batch of
packed sequences) in a fresh subprocess, and records `torch.cuda.max_memory_allocated` next to the
planner's `peak_allocated`. Goal: every prediction within 10%.

    python bench/plan_accuracy.py --output bench/results/plan_accuracy.json

Without a CUDA device it writes the predictions alone and says it has not run on a GPU. QLoRA rows need
bitsandbytes; where it is missing they are recorded as skipped. Imports only the planner's pure modules
(no pydantic, no datasets), so it runs on a bare PyTorch + transformers + peft machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codetune.plan.known_configs import KNOWN_CONFIGS  # noqa: E402
from codetune.plan.memory import GIB, Setup, estimate  # noqa: E402
from codetune.plan.shapes import shape_from_config  # noqa: E402

DEVICE_MAP = {"": 0}  # every weight on the first GPU
MODELS = {"gpt2": "gpt2", "codegen-350m": "Salesforce/codegen-350M-mono", "starcoder2-3b": "bigcode/starcoder2-3b"}
GRID = [
    # (model, method, micro_batch, seq_len, gradient_checkpointing)
    ("gpt2", "full", 8, 1024, False),
    ("gpt2", "full", 4, 1024, True),
    ("gpt2", "lora", 8, 1024, False),
    ("gpt2", "qlora", 8, 1024, False),
    ("codegen-350m", "full", 4, 512, False),
    ("codegen-350m", "full", 2, 2048, True),
    ("codegen-350m", "lora", 4, 1024, False),
    ("codegen-350m", "qlora", 4, 1024, True),
    ("starcoder2-3b", "full", 1, 2048, False),
    ("starcoder2-3b", "full", 2, 2048, True),
    ("starcoder2-3b", "lora", 2, 1024, False),
    ("starcoder2-3b", "lora", 4, 2048, True),
    ("starcoder2-3b", "qlora", 4, 512, False),
    ("starcoder2-3b", "qlora", 4, 1024, True),
]


def setup_for(model: str, method: str, micro_batch: int, seq_len: int, ckpt: bool) -> Setup:
    shape = shape_from_config(KNOWN_CONFIGS[MODELS[model]])
    return Setup(method=method, micro_batch=micro_batch, seq_len=seq_len, weight_bytes=2, compute_bytes=2,
                 autocast=True, optimizer="adamw", gradient_checkpointing=ckpt,
                 attention="eager" if shape.eager_only else "sdpa", lora_r=16, lora_dropout=0.05)


def predicted_gib(model: str, setup: Setup) -> float:
    return estimate(shape_from_config(KNOWN_CONFIGS[MODELS[model]]), setup).peak_allocated / GIB


def measure_one(model: str, method: str, micro_batch: int, seq_len: int, ckpt: bool) -> dict:
    """Runs in its own process: build, train three steps, report the allocator's peak."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = dict(KNOWN_CONFIGS[MODELS[model]])
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    attn = "eager" if config.model_type == "codegen" else "sdpa"
    torch.manual_seed(0)
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        with tempfile.TemporaryDirectory() as tmp:
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
            net = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=quant, dtype=torch.bfloat16,
                                                       attn_implementation=attn, device_map=DEVICE_MAP)
        from peft import prepare_model_for_kbit_training

        net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=ckpt,
                                              gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        net = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn).cuda()
        if ckpt:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method in {"lora", "qlora"}:
        from peft import LoraConfig, get_peft_model

        net = get_peft_model(net, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"))
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, config.vocab_size, (micro_batch, seq_len), device="cuda")
    start = time.perf_counter()
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return {"measured_gib": torch.cuda.max_memory_allocated() / GIB,
            "step_s": (time.perf_counter() - start) / 3, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/plan_accuracy.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*json.loads(args.one))))
        return
    import importlib.util

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    rows = []
    for model, method, mb, seq, ckpt in GRID:
        row = {"model": model, "method": method, "micro_batch": mb, "seq_len": seq,
               "gradient_checkpointing": ckpt,
               "predicted_gib": round(predicted_gib(model, setup_for(model, method, mb, seq, ckpt)), 3)}
        if gpu is None:
            row["status"] = "not run: no CUDA device"
        elif method == "qlora" and not has_bnb:
            row["status"] = "skipped: bitsandbytes is not installed"
        else:
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps([model, method, mb, seq, ckpt])],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                row["status"] = "failed: " + " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
            else:
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                row["measured_gib"] = round(row["measured_gib"], 3)
                row["error_pct"] = round(100 * (row["predicted_gib"] / row["measured_gib"] - 1), 1)
                row["within_10pct"] = abs(row["error_pct"]) <= 10
                row["status"] = "measured"
        rows.append(row)
        print(json.dumps(row), flush=True)
    measured = [r for r in rows if r["status"] == "measured"]
    result = {
        "benchmark": "plan_accuracy", "date": datetime.date.today().isoformat(), "device": gpu,
        "ran_on_gpu": bool(measured),
        "note": ("predicted = codetune.plan.memory peak_allocated; measured = torch.cuda.max_memory_allocated "
                 "over three training steps (bf16 weights + autocast, fused AdamW, dropout on)"
                 if measured else "has not run on a GPU yet: predictions only; run this script on a CUDA machine"),
        "within_10pct": f"{sum(r['within_10pct'] for r in measured)}/{len(measured)}" if measured else None,
        "max_abs_error_pct": max((abs(r["error_pct"]) for r in measured), default=None),
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {result['within_10pct'] or 'not run on a GPU'}")


if __name__ == "__main__":
    main()
