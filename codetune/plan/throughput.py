"""Training FLOPs and time: pure functions, no torch.

FLOPs per token follow Kaplan et al. 2020 / the PaLM paper's MFU appendix (Chowdhery et al. 2022):
a forward pass costs 2 FLOPs per matmul weight (N = every linear layer plus the output head; embedding
lookups, norms and biases are negligible) and 4 * layers * (heads * head_dim) * seq for the two attention
products (QK^T and AV, not halved for the causal mask, as PaLM counts). Backward costs twice the forward:
one product for the activation gradients, one for the weight gradients. So full fine-tuning is
6N + 12 * layers * q_dim * seq per token.

LoRA/QLoRA: the frozen base weights still need activation gradients but no weight gradients, so the base
costs 4N; the adapters are trained (6 * adapter params, small); attention has no weights and keeps its 12.
Gradient checkpointing recomputes the forward once more (2N + 4 * layers * q_dim * seq): that is hardware
work but not "model FLOPs", so MFU (model FLOPs / (time x peak)) stays comparable across settings.

Time = hardware FLOPs / (MFU x peak x GPUs). MFU is an assumption the user can set (plan.mfu, default
0.4, what well-tuned bf16 fine-tuning of 1-15B models reaches on A100/H100). QLoRA's dequantisation of
every weight in forward and backward costs throughput; we take 0.7 of the LoRA rate, in line with the
~30-40% slowdown reported for bitsandbytes 4-bit training versus bf16 LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

from codetune.plan.shapes import ModelShape, matmul_params

QLORA_EFFICIENCY = 0.7


def attention_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Forward FLOPs of QK^T and AV for one token."""
    return 4.0 * shape.layers * shape.q_dim * seq_len


def model_flops_per_token(shape: ModelShape, seq_len: int, method: str = "full", lora_params: int = 0) -> float:
    """Training FLOPs (forward + backward) per token, without recomputation. The training flow divides
    this x tokens/s by the GPU peak to log MFU."""
    n = matmul_params(shape)
    attention = 3 * attention_flops_per_token(shape, seq_len)
    if method == "full":
        return 6.0 * n + attention
    return 4.0 * n + 6.0 * lora_params + attention


def recompute_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """The extra forward that gradient checkpointing runs during backward."""
    return 2.0 * matmul_params(shape) + attention_flops_per_token(shape, seq_len)


@dataclass(frozen=True)
class TimeEstimate:
    tokens: int
    model_flops: float
    hardware_flops: float
    achieved_tflops_per_gpu: float
    num_gpus: int

    @property
    def seconds(self) -> float:
        return self.hardware_flops / (self.achieved_tflops_per_gpu * 1e12 * self.num_gpus)

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def gpu_hours(self) -> float:
        return self.hours * self.num_gpus


def estimate_time(shape: ModelShape, tokens: int, seq_len: int, method: str, lora_params: int,
                  gradient_checkpointing: bool, peak_tflops: float, mfu: float, num_gpus: int = 1) -> TimeEstimate:
    per_token = model_flops_per_token(shape, seq_len, method, lora_params)
    extra = recompute_flops_per_token(shape, seq_len) if gradient_checkpointing else 0.0
    achieved = peak_tflops * mfu * (QLORA_EFFICIENCY if method == "qlora" else 1.0)
    return TimeEstimate(tokens, per_token * tokens, (per_token + extra) * tokens, achieved, num_gpus)
