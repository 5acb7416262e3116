"""Throughput accounting for every training run: useful tokens per second and MFU.

- Useful tokens are the tokens that carry a label (`labels != -100`): padding never counts, and neither do
  masked prompt tokens. A padded batch therefore shows its waste as a lower rate, a packed one does not.
- MFU (model FLOPs utilisation, PaLM appendix B) = useful tokens/s x model FLOPs per token / peak FLOP/s.
  Model FLOPs per token come from the planner (`plan.throughput.model_flops_per_token`: 6N plus the
  attention term at the row length, 4N + 6 x adapter params for LoRA/QLoRA), so the plan's time estimate
  and the run's MFU use one formula. Recomputation (gradient checkpointing) is not model FLOPs.
- Peak: what this device does on a large matrix product, measured once per process: fp32 GEMM on a CPU
  (at the current torch thread count), the compute dtype (bf16/fp16) on a GPU. A measured peak makes MFU
  honest on machines no datasheet describes; on a GPU it sits a little under the datasheet figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

IGNORE_INDEX = -100


def useful_tokens(labels) -> int:
    """Tokens that carry a label in one batch (a tensor or nested lists)."""
    import torch

    return int((torch.as_tensor(labels) != IGNORE_INDEX).sum())


def mfu(useful_tokens_per_s: float | None, flops_per_token: float, peak_flops: float) -> float | None:
    """Model FLOPs per second over the device's peak, or None when a figure is missing."""
    if not useful_tokens_per_s or not peak_flops or not flops_per_token:
        return None
    return useful_tokens_per_s * flops_per_token / peak_flops


def base_model(model):
    """The transformers model under PEFT / DDP / torch.compile wrappers."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif hasattr(inner, "module"):
            inner = inner.module
        elif hasattr(inner, "_orig_mod"):
            inner = inner._orig_mod
        else:
            break
    return inner


def method_of(model) -> tuple[str, int]:
    """('full' | 'lora', trainable parameter count) as the FLOPs formula needs them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ("lora" if hasattr(model, "peft_config") else "full"), trainable


def model_flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token of this model at this row length (the planner's formula)."""
    from codetune.plan.shapes import shape_from_config
    from codetune.plan.throughput import model_flops_per_token as formula

    shape = shape_from_config(base_model(model).config.to_dict())
    method, trainable = method_of(model)
    return formula(shape, seq_len, method, trainable if method != "full" else 0)


@cache
def measured_peak_flops(device: str = "cpu", dtype_name: str = "float32", threads: int | None = None) -> float:
    """FLOP/s of the best of a few square matmuls (cached per device, dtype and thread count)."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = 1024 if device == "cpu" else 8192
    # A private generator: drawing from the global one would shift the RNG stream (dropout masks) of the
    # run that happens to measure first, and break exact resume against a run that did not.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    for _ in range(6):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def device_peak_flops(model) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for the device and compute dtype this model trains in."""
    import torch

    param = next(model.parameters())
    if param.device.type == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return measured_peak_flops("cuda", dtype), f"measured {dtype} matmul, {torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads()
    return measured_peak_flops("cpu", "float32", threads), f"measured fp32 GEMM, {threads} CPU thread(s)"


@dataclass
class ThroughputMeter:
    """Useful tokens counted by the trainer; FLOPs per token and peak resolved on the first batch."""

    useful: int = 0
    flops_per_token: float = 0.0
    peak_flops: float = 0.0
    peak_source: str = ""
    _pending: object = None  # a device tensor of not-yet-read counts (no GPU sync per step)

    def count(self, labels) -> None:
        n = (labels != IGNORE_INDEX).sum()
        self._pending = n if self._pending is None else self._pending + n

    def total(self) -> int:
        if self._pending is not None:
            self.useful += int(self._pending)
            self._pending = None
        return self.useful

    def resolve_peak(self, model) -> None:
        if not self.peak_flops:
            self.peak_flops, self.peak_source = device_peak_flops(model)

    def resolve(self, model, seq_len: int) -> None:
        if not self.flops_per_token:
            self.flops_per_token = model_flops_per_token(model, seq_len)
        self.resolve_peak(model)

    def mfu(self, useful_tokens_per_s: float | None) -> float | None:
        return mfu(useful_tokens_per_s, self.flops_per_token, self.peak_flops)
