"""GPUs users have, by short name: usable memory, peak dense tensor-core rate, bf16 support.

`memory_gib` is what the driver reports as total (nvidia-smi MiB / 1024), not the marketing GB.
`peak_tflops` is the dense (no sparsity) bf16 rate with fp32 accumulation from NVIDIA's datasheets, or the
fp16 rate where the GPU has no bf16 (T4). GeForce cards are quoted at fp32 accumulation (the rate training
uses), which is half the headline fp16-accumulate figure. A10G is AWS's variant; its rate is the commonly
quoted 70 TFLOPS (NVIDIA publishes no A10G datasheet).
"""

from __future__ import annotations

from dataclasses import dataclass

from codetune.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    label: str
    memory_gib: float
    peak_tflops: float
    bf16: bool

    @property
    def compute_dtype(self) -> str:
        return "bfloat16" if self.bf16 else "float16"


GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("t4", "NVIDIA T4 16GB", 15.0, 65.0, False),
    GPU("l4", "NVIDIA L4 24GB", 22.5, 121.0, True),
    GPU("a10g", "NVIDIA A10G 24GB", 22.5, 70.0, True),
    GPU("rtx3090", "GeForce RTX 3090 24GB", 24.0, 71.0, True),
    GPU("rtx4090", "GeForce RTX 4090 24GB", 24.0, 165.2, True),
    GPU("a100-40gb", "NVIDIA A100 40GB", 40.0, 312.0, True),
    GPU("a100-80gb", "NVIDIA A100 80GB", 80.0, 312.0, True),
    GPU("h100", "NVIDIA H100 SXM 80GB", 79.6, 989.0, True),
    GPU("h200", "NVIDIA H200 141GB", 140.4, 989.0, True),
]}
ALIASES = {"a100": "a100-80gb", "a100-40": "a100-40gb", "a100-80": "a100-80gb", "3090": "rtx3090",
           "4090": "rtx4090", "h100-80gb": "h100", "a10": "a10g"}
DEFAULT_GPU = "a100-80gb"


def get_gpu(name: str | None, memory_gib: float | None = None, tflops: float | None = None) -> GPU:
    """Look a GPU up by short name; custom memory/TFLOPS override the table (or describe an unlisted GPU)."""
    if name is None and memory_gib is None and tflops is None:
        name = DEFAULT_GPU
    if name is not None:
        key = ALIASES.get(name.lower(), name.lower())
        if key not in GPUS:
            raise ConfigError(f"config error: `plan.gpu`: unknown GPU {name!r}; known: {', '.join(GPUS)} "
                              "(or give plan.gpu_memory_gb and plan.gpu_tflops)")
        base = GPUS[key]
    else:
        if memory_gib is None or tflops is None:
            raise ConfigError("config error: a custom GPU needs both `plan.gpu_memory_gb` and `plan.gpu_tflops`")
        base = GPU("custom", "custom GPU", memory_gib, tflops, True)
    if memory_gib is None and tflops is None:
        return base
    return GPU(base.name, base.label + " (custom figures)", memory_gib or base.memory_gib,
               tflops or base.peak_tflops, base.bf16)
