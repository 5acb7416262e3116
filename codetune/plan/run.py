"""`codetune plan`: will this run fit on this GPU, how long will it take, and what to change if not.

`plan_for_config(cfg)` is cheap and side-effect free (reads the model config and, if present, the
prepared data report); `codetune train` calls it to refuse a predicted OOM and to resolve
`train.micro_batch: auto`. `run(cfg)` also writes `<output_dir>/plan.json`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from codetune.config import Config
from codetune.errors import ConfigError
from codetune.plan.gpus import GPU, get_gpu
from codetune.plan.memory import GIB, Setup, estimate
from codetune.plan.recommend import Recommendation, recommend
from codetune.plan.shapes import ModelShape, count_params, load_shape
from codetune.plan.throughput import TimeEstimate, estimate_time

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ENGINES = ("ddp", "fsdp", "zero2", "zero3")


@dataclass
class PlanResult:
    model: str
    shape: ModelShape
    gpu: GPU
    setup: Setup  # as it will run: decided checkpointing, configured (or auto-resolved) micro-batch
    compute_dtype: str
    rec: Recommendation
    time: TimeEstimate
    tokens_source: str
    sharding: dict[str, dict[int, float]]  # engine -> {num_gpus: per-GPU total GiB}
    warnings: list[str] = field(default_factory=list)
    output_dir: Path | None = None

    # the fields `codetune train` reads
    @property
    def fits(self) -> bool:
        return self.rec.fits

    @property
    def margin_gb(self) -> float:
        return self.rec.margin_gib

    @property
    def recommended_micro_batch(self) -> int:
        return self.rec.recommended_micro_batch

    @property
    def recommended_grad_accum(self) -> int:
        return self.rec.recommended_grad_accum

    @property
    def gradient_checkpointing(self) -> bool:
        return self.rec.gradient_checkpointing

    @property
    def suggestions(self) -> list[str]:
        return self.rec.suggestions

    @property
    def peak_gb(self) -> float:
        return self.rec.estimate.total / GIB

    def refusal(self) -> str:
        """One line for `codetune train` to refuse a predicted out-of-memory run."""
        first = self.suggestions[0] if self.suggestions else "reduce train.micro_batch or data.seq_len"
        return (f"plan predicts out of memory on {self.gpu.label}: {self.peak_gb:.1f} GiB needed, "
                f"{self.gpu.memory_gib:.1f} GiB available; {first}; --force starts anyway")

    def to_json(self) -> dict:
        """A JSON-ready dict (what plan.json holds)."""
        est = self.rec.estimate
        return {
            "model": self.model, "shape_source": self.shape.source,
            "shape": {k: getattr(self.shape, k) for k in ("model_type", "layers", "hidden", "heads", "kv_heads",
                                                          "head_dim", "intermediate", "vocab", "tied_embeddings")},
            "parameters": count_params(self.shape),
            "gpu": {"name": self.gpu.name, "label": self.gpu.label, "memory_gib": self.gpu.memory_gib,
                    "peak_tflops": self.gpu.peak_tflops, "bf16": self.gpu.bf16},
            "setup": {**self.setup.__dict__, "compute_dtype": self.compute_dtype},
            "memory_gib": {k: round(v, 4) for k, v in est.gib().items()},
            "peak_allocated_gib": round(est.peak_allocated / GIB, 3), "peak_phase": est.peak_phase,
            "overhead_gib": round(est.overhead / GIB, 3), "total_gib": round(est.total / GIB, 3),
            "fits": self.fits, "margin_gib": round(self.margin_gb, 3),
            "gradient_checkpointing": self.gradient_checkpointing, "max_micro_batch": self.rec.max_micro_batch,
            "recommended_micro_batch": self.recommended_micro_batch,
            "recommended_grad_accum": self.recommended_grad_accum,
            "suggestions": self.suggestions, "switches": self.rec.switches, "warnings": self.warnings,
            "notes": self.rec.notes + est.notes + list(self.shape.notes),
            "time": {"tokens": self.time.tokens, "tokens_source": self.tokens_source,
                     "model_flops": self.time.model_flops, "hardware_flops": self.time.hardware_flops,
                     "achieved_tflops_per_gpu": self.time.achieved_tflops_per_gpu, "hours": self.time.hours,
                     "gpu_hours": self.time.gpu_hours, "num_gpus": self.time.num_gpus},
            "sharding_total_gib": {e: {str(n): v for n, v in per.items()} for e, per in self.sharding.items()},
        }

    def summary(self) -> str:
        from codetune.plan.render import render

        buffer = io.StringIO()
        render(self, buffer)
        return buffer.getvalue().rstrip()


def _dtype(cfg: Config, gpu: GPU, warnings: list[str]) -> str:
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else gpu.compute_dtype
    if dtype == "bfloat16" and not gpu.bf16:
        warnings.append(f"{gpu.label} has no bf16: set model.dtype=float16 (bf16 is emulated slowly or fails)")
    return dtype


def setup_from_config(cfg: Config, shape: ModelShape, gpu: GPU, warnings: list[str]) -> tuple[Setup, str]:
    dtype = _dtype(cfg, gpu, warnings)
    m = cfg.method
    compute = dtype if m.kind != "qlora" or m.compute_dtype == "auto" else m.compute_dtype
    if m.kind == "qlora" and compute == "float32":
        compute = gpu.compute_dtype
    attention = cfg.model.attn_implementation if cfg.model.attn_implementation != "auto" else "sdpa"
    if shape.eager_only and attention != "eager":
        attention = "eager"
        warnings.append(f"{shape.model_type} has eager attention only in transformers: seq^2 scores are stored")
    targets = m.target_modules if isinstance(m.target_modules, str) else tuple(m.target_modules)
    mb = cfg.train.micro_batch if isinstance(cfg.train.micro_batch, int) else 1
    return Setup(
        method=m.kind, micro_batch=mb, seq_len=cfg.data.seq_len, grad_accum=cfg.train.grad_accum,
        # weights as `codetune train` loads them: fp32 master weights (full), the compute dtype (LoRA base)
        weight_bytes=None, compute_bytes=DTYPE_BYTES[compute],
        autocast=DTYPE_BYTES[compute] < 4, optimizer=cfg.train.optimizer,
        gradient_checkpointing=cfg.train.gradient_checkpointing is True, attention=attention, lora_r=m.r,
        lora_targets=targets, lora_dropout=m.dropout, double_quant=m.double_quant, num_gpus=cfg.plan.num_gpus,
        engine=cfg.plan.engine, chunked_loss=not cfg.train.torch_compile,  # the trainer's default loss
    ), compute


def training_tokens(cfg: Config, tokens_per_step: int) -> tuple[int, str]:
    """Tokens the GPUs will process, and where the number came from."""
    if cfg.train.max_steps:
        return cfg.train.max_steps * tokens_per_step, f"train.max_steps={cfg.train.max_steps} x tokens per step"
    report = cfg.run_dir / "data" / "prepare_report.json"
    per_epoch, source = None, ""
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            rows = (data.get("sequences") or {}).get("train")
            seq_len = data.get("seq_len") or cfg.data.seq_len
            if rows:
                per_epoch, source = int(rows) * int(seq_len), f"{report} ({rows:,} packed train rows)"
            elif (data.get("tokens_total") or {}).get("train"):
                per_epoch, source = int(data["tokens_total"]["train"]), f"{report} (train tokens)"
        except (OSError, ValueError, TypeError, AttributeError):
            per_epoch = None
    if per_epoch is None and cfg.plan.total_tokens:
        per_epoch, source = cfg.plan.total_tokens, "plan.total_tokens"
    if per_epoch is None:
        raise ConfigError("plan: no token count for the time estimate: run `codetune prepare` first, or set "
                          "plan.total_tokens (training-set tokens) or train.max_steps")
    return int(per_epoch * cfg.train.epochs), f"{source} x {cfg.train.epochs:g} epochs"


def plan_for_config(cfg: Config, device_override: GPU | str | None = None) -> PlanResult:
    """The plan for a config; no files written. `device_override` replaces plan.gpu (the trainer passes the
    GPU it actually sees)."""
    if isinstance(device_override, GPU):
        gpu = device_override
    else:
        gpu = get_gpu(device_override or cfg.plan.gpu, cfg.plan.gpu_memory_gb, cfg.plan.gpu_tflops)
    shape = load_shape(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    warnings: list[str] = []
    setup, compute = setup_from_config(cfg, shape, gpu, warnings)
    budget = gpu.memory_gib * GIB
    micro_batch = cfg.train.micro_batch if isinstance(cfg.train.micro_batch, int) else None
    ckpt = cfg.train.gradient_checkpointing if isinstance(cfg.train.gradient_checkpointing, bool) else None
    rec = recommend(shape, setup, budget, micro_batch, ckpt)
    setup = rec.estimate.setup
    tokens_per_step = setup.micro_batch * setup.grad_accum * setup.seq_len * setup.num_gpus
    try:
        tokens, tokens_source = training_tokens(cfg, tokens_per_step)
    except ConfigError as exc:
        tokens, tokens_source = 0, str(exc)
    lora_params = int(rec.estimate.items["LoRA adapters (fp32)"] / 4)
    time = estimate_time(shape, tokens, setup.seq_len, setup.method, lora_params, setup.gradient_checkpointing,
                         gpu.peak_tflops, cfg.plan.mfu, setup.num_gpus)
    sharding = {e: {n: round(estimate(shape, setup.with_(num_gpus=n, engine=e)).total / GIB, 2)
                    for n in sorted({2, 4, 8, setup.num_gpus} - {1})} for e in ENGINES}
    if shape.source != "config":
        warnings.append(f"model shape from the {shape.source}")
    return PlanResult(cfg.model.name_or_path, shape, gpu, setup, compute, rec, time, tokens_source, sharding,
                      warnings, cfg.run_dir)


def run(cfg: Config) -> PlanResult:
    """Plan and write `<output_dir>/plan.json` (atomically)."""
    result = plan_for_config(cfg)
    out = cfg.run_dir / "plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    os.replace(tmp, out)
    return result
