"""Verdict and recommendation from the memory formula (pure functions, no torch, no pydantic).

Given a Setup and a GPU budget: does it fit, with which margin; the largest micro-batch that fits and the
gradient accumulation that keeps the configured effective batch; and, when even one sequence does not
fit, which switches to turn, in order of least quality cost (gradient checkpointing costs only time,
8-bit AdamW is near-lossless, LoRA then QLoRA change what is learned, shorter sequences change the data),
each with its predicted peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codetune.plan.memory import GIB, MemoryEstimate, Setup, estimate, largest_micro_batch
from codetune.plan.shapes import ModelShape


@dataclass
class Recommendation:
    fits: bool
    estimate: MemoryEstimate  # at the micro-batch that will run (configured, or recommended for auto)
    margin_gib: float
    gradient_checkpointing: bool
    max_micro_batch: int  # largest that fits with the chosen checkpointing setting; 0 if none
    recommended_micro_batch: int
    recommended_grad_accum: int
    suggestions: list[str] = field(default_factory=list)
    switches: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _split_batch(effective: int, max_fit: int) -> tuple[int, int]:
    """Largest micro-batch <= max_fit that divides the effective batch exactly, and the accumulation."""
    for mb in range(min(effective, max_fit), 0, -1):
        if effective % mb == 0:
            return mb, effective // mb
    return 1, effective


def _with_batch(setup: Setup, micro_batch: int, grad_accum: int) -> Setup:
    return setup.with_(micro_batch=max(1, micro_batch), grad_accum=max(1, grad_accum))


def recommend(shape: ModelShape, setup: Setup, budget_bytes: float, micro_batch: int | None,
              gradient_checkpointing: bool | None, auto_cap: int = 64) -> Recommendation:
    """`micro_batch` None means `auto`; `gradient_checkpointing` None means `auto` (on only if needed)."""
    wanted_mb = micro_batch or 1
    notes = []
    if gradient_checkpointing is None:
        plain = estimate(shape, setup.with_(micro_batch=wanted_mb, gradient_checkpointing=False))
        gradient_checkpointing = plain.total > budget_bytes
        if gradient_checkpointing:
            notes.append(f"gradient checkpointing auto -> on: without it micro_batch {wanted_mb} needs "
                         f"{plain.total / GIB:.1f} GiB")
    setup = setup.with_(gradient_checkpointing=gradient_checkpointing)
    max_fit = largest_micro_batch(shape, setup.with_(grad_accum=max(setup.grad_accum, 2)), budget_bytes)
    if micro_batch is None:  # auto: the largest power of two that fits, accumulation as configured
        rec_mb = 1
        while rec_mb * 2 <= min(max_fit, auto_cap):
            rec_mb *= 2
        rec_ga = setup.grad_accum
        run_mb = rec_mb
    else:
        rec_mb, rec_ga = _split_batch(micro_batch * setup.grad_accum, max(max_fit, 1))
        run_mb = micro_batch
    running = estimate(shape, _with_batch(setup, run_mb, setup.grad_accum))
    fits = running.total <= budget_bytes
    rec = Recommendation(fits, running, (budget_bytes - running.total) / GIB, gradient_checkpointing, max_fit,
                         rec_mb, rec_ga, notes=notes)
    if max_fit == 0:
        rec.switches = switches_to_fit(shape, setup, budget_bytes)
        rec.suggestions = [s["text"] for s in rec.switches]
    elif not fits:
        rec.suggestions = [f"micro_batch {run_mb} does not fit: use train.micro_batch={rec_mb} "
                           f"train.grad_accum={rec_ga} (same effective batch of {run_mb * setup.grad_accum})"]
    return rec


def switches_to_fit(shape: ModelShape, setup: Setup, budget_bytes: float) -> list[dict]:
    """Turn switches one after another (cumulatively) until one sequence fits; each with its peak."""
    steps: list[tuple[str, str, dict]] = []
    if not setup.gradient_checkpointing:
        steps.append(("gradient checkpointing", "train.gradient_checkpointing=true",
                      {"gradient_checkpointing": True}))
    if setup.optimizer == "adamw" and setup.method == "full":
        steps.append(("8-bit AdamW", "train.optimizer=adamw_8bit", {"optimizer": "adamw_8bit"}))
    if setup.method == "full":
        steps.append(("LoRA", "method.kind=lora", {"method": "lora"}))
    if setup.method != "qlora":
        steps.append(("QLoRA (4-bit base)", "method.kind=qlora", {"method": "qlora"}))
    current = setup.with_(micro_batch=1)
    out: list[dict] = []
    for label, override, change in steps:
        current = current.with_(**change)
        if change.get("method") in {"lora", "qlora"} and current.optimizer == "adamw_8bit":
            current = current.with_(optimizer="adamw")  # adapters are small; 8-bit states buy nothing
        est = estimate(shape, current)
        out.append(_switch(label, override, est, budget_bytes, shape, current))
        if est.total <= budget_bytes:
            return out
    seq = current.seq_len
    while seq > 128:
        seq //= 2
        current = current.with_(seq_len=seq)
        est = estimate(shape, current)
        out.append(_switch(f"sequence length {seq}", f"data.seq_len={seq}", est, budget_bytes, shape, current))
        if est.total <= budget_bytes:
            return out
    if setup.num_gpus > 1 and setup.engine in {"ddp", "zero2"}:
        est = estimate(shape, current.with_(engine="zero3"))
        out.append(_switch("shard weights too (ZeRO-3)", "plan.engine=zero3", est, budget_bytes, shape, current))
    return out


def _switch(label: str, override: str, est: MemoryEstimate, budget: float, shape: ModelShape,
            setup: Setup) -> dict:
    fits = est.total <= budget
    mb = largest_micro_batch(shape, setup, budget) if fits else 0
    verdict = f"fits, up to micro_batch {mb}" if fits else "still over"
    return {"switch": label, "override": override, "predicted_gib": round(est.total / GIB, 2), "fits": fits,
            "max_micro_batch": mb,
            "text": f"+ {label} ({override}): {est.total / GIB:.1f} GiB at micro_batch 1, {verdict}"}
