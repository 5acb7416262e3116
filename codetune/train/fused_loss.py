"""Cross-entropy over a large vocabulary without materialising the logits of the whole batch.

transformers' causal-LM loss computes `lm_head(hidden)` for every token, upcasts those logits to fp32 and
keeps the log-softmax for backward: 12 bytes x tokens x vocab (1.1 GiB for one 2048-token row of
StarCoder2's 49k vocabulary), and on a CPU the memory traffic of that tensor costs more time than the
matmul. `linear_cross_entropy` instead walks the tokens in chunks and, for each chunk, computes the
logits, the loss *and the gradients* at once (the "fused linear cross-entropy" of Liger-Kernel / Wijmans
et al. 2024 "Cut Your Losses"), so only one chunk's logits ever exist and backward merely scales the
stored gradients. It does the same FLOPs as the plain path (no recomputation) and skips the weight
gradient when the head is frozen (LoRA).

`fused_cross_entropy(model)` is the switch the trainer uses: for the duration of one forward it makes the
head return its input and the model's loss function call `linear_cross_entropy` with the head's weight,
so the model's own `forward` (autocast, DDP hooks, PEFT) still runs unchanged and the saved state dict
keys do not move. Liger-Kernel's Triton kernel is used instead when the package is installed, the tensors
are on a GPU and it imports; otherwise the pure-torch chunked version runs.
"""

from __future__ import annotations

from contextlib import contextmanager

IGNORE_INDEX = -100
CHUNK_TOKENS = 1024  # one chunk's fp32 logits: 1024 x 49152 x 4 B = 192 MiB for StarCoder2's vocabulary


def _liger_loss():
    """Liger's public loss module (`forward(weight, input, target, bias)`), or None where it cannot run."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception:  # not installed, or no Triton on this machine
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")


def _chunked_function():
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """Sum of token cross-entropies of `hidden @ weight.T (+ bias)`; gradients computed in forward."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, chunk):
            need_w = weight.requires_grad
            need_b = bias is not None and bias.requires_grad
            compute = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(
                hidden.device.type) else hidden.dtype
            w = weight.to(compute)
            b = bias.to(compute) if bias is not None else None
            grad_h = torch.empty_like(hidden, dtype=compute) if hidden.requires_grad else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(compute)
                t = targets[start : start + chunk]
                logits = (h @ w.T if b is None else torch.addmm(b, h, w.T)).float()
                lse = torch.logsumexp(logits, dim=-1)
                valid = t != IGNORE_INDEX
                safe = torch.where(valid, t, 0)
                picked = logits.gather(1, safe[:, None]).squeeze(1)
                total += torch.where(valid, lse - picked, 0.0).sum()
                # d(sum of losses)/d(logits) = softmax - onehot, zero on ignored rows
                grad = torch.exp(logits - lse[:, None])
                grad.scatter_add_(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
                grad.mul_(valid[:, None])
                grad = grad.to(compute)
                if grad_h is not None:
                    grad_h[start : start + chunk] = grad @ w
                if grad_w is not None:
                    grad_w.add_(grad.T @ h)
                if grad_b is not None:
                    grad_b.add_(grad.sum(0))
            ctx.save_for_backward(grad_h, grad_w, grad_b)
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            return total

        @staticmethod
        def backward(ctx, grad_out):
            grad_h, grad_w, grad_b = ctx.saved_tensors
            scale = grad_out.float()
            h_dtype, w_dtype, b_dtype = ctx.dtypes
            return (
                None if grad_h is None else (grad_h * scale).to(h_dtype),
                None if grad_w is None else (grad_w * scale).to(w_dtype),
                None if grad_b is None else (grad_b * scale).to(b_dtype),
                None,
                None,
            )

    return ChunkedLinearCrossEntropy


_CHUNKED = None


def linear_cross_entropy(hidden, weight, bias, targets, num_items=None, chunk: int = CHUNK_TOKENS,
                         allow_liger: bool = True):
    """Mean (or sum / num_items) cross-entropy of `hidden (N, h) @ weight (V, h).T + bias` against
    `targets (N,)`, ignoring -100, without holding N x V logits."""
    global _CHUNKED
    import torch

    liger = _liger_loss() if allow_liger and hidden.is_cuda else None
    if liger is not None:
        out = liger(weight, hidden, targets, bias)
        total = out[0] if isinstance(out, tuple) else out
    else:
        if _CHUNKED is None:
            _CHUNKED = _chunked_function()
        total = _CHUNKED.apply(hidden, weight, bias, targets, chunk)
    if num_items is None:
        num_items = (targets != IGNORE_INDEX).sum().clamp(min=1)
    if torch.is_tensor(num_items):
        num_items = num_items.to(total.device)
    return total / num_items


def output_head(model):
    """The causal LM's output projection when it is a plain `nn.Linear` we can stand in for, else None
    (a PEFT-wrapped or quantised head keeps the model's own loss)."""
    import torch

    from codetune.train.throughput import base_model

    inner = base_model(model)
    head = getattr(inner, "lm_head", None)
    if type(head) is not torch.nn.Linear or not hasattr(type(inner), "loss_function"):
        return None, None
    return inner, head


def supported(model) -> bool:
    return output_head(model)[0] is not None


@contextmanager
def fused_cross_entropy(model, chunk: int = CHUNK_TOKENS):
    """Within the block, `model(..., labels=...)` computes its loss with `linear_cross_entropy` and returns
    hidden states in place of logits. Outside it the model is untouched (generation still works)."""
    import torch

    inner, head = output_head(model)
    if inner is None:
        yield False
        return

    def loss_function(logits, labels, vocab_size=None, num_items_in_batch=None, shift_labels=None,
                      ignore_index=IGNORE_INDEX, **kwargs):
        if shift_labels is None:
            shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        hidden = logits.reshape(-1, logits.shape[-1])
        return linear_cross_entropy(hidden, head.weight, head.bias, shift_labels.reshape(-1).to(hidden.device),
                                    num_items_in_batch, chunk)

    had_own = "_loss_function" in inner.__dict__
    previous = inner.__dict__.get("_loss_function")
    head.forward = lambda x: x  # instance attribute: the class's forward is back when it is deleted
    inner.loss_function = loss_function
    try:
        yield True
    finally:
        del head.forward
        if had_own:
            inner._loss_function = previous
        else:
            del inner._loss_function
