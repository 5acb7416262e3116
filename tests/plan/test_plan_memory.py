"""The memory formula against hand-worked numbers, and its shape (monotone in batch and sequence)."""

from __future__ import annotations

import pytest

from codetune.plan.known_configs import KNOWN_CONFIGS
from codetune.plan.memory import (
    GIB,
    Setup,
    activation_bytes,
    estimate,
    largest_micro_batch,
    logits_bytes,
    lora_tensors,
    optimizer_state_bytes,
    weight_bytes,
    workspace_bytes,
)
from codetune.plan.shapes import count_params, shape_from_config

SC3B = shape_from_config(KNOWN_CONFIGS["bigcode/starcoder2-3b"])
GPT2 = shape_from_config(KNOWN_CONFIGS["gpt2"])
# StarCoder2-3B: h=3072, 30 layers, 24 heads, 2 kv heads (kv_dim 256), f=12288, V=49152, tied.
# per layer: q,o 3072*3072 = 9,437,184 each; k,v 3072*256 = 786,432 each; c_fc, c_proj 37,748,736 each
#   -> 95,944,704 linear weights; biases 3072+256+256+3072+12288+3072 = 22,016; 2 LayerNorms 12,288
#   -> 95,979,008 per layer x 30 = 2,879,370,240; + embeddings 150,994,944 + final norm 6,144
SC3B_PARAMS = 3_030_371_328
SC3B_LINEAR = 95_944_704 * 30


def test_parameter_counts_by_hand():
    assert count_params(SC3B) == SC3B_PARAMS
    # GPT-2: wte 50257*768 + wpe 1024*768 + 12 * (2 LN 3072 + c_attn 768*2304+2304 + c_proj 768*768+768
    #   + c_fc 768*3072+3072 + c_proj 3072*768+768) + ln_f 1536 = 124,439,808
    assert count_params(GPT2) == 124_439_808


def test_starcoder2_3b_full_as_the_trainer_runs_it():
    """fp32 master weights, bf16 autocast, fused AdamW with fp32 states (what `codetune train` does)."""
    s = Setup(method="full", micro_batch=1, seq_len=2048)
    est = estimate(SC3B, s)
    assert est.items["weights"] == SC3B_PARAMS * 4  # fp32: 12,121,485,312 B = 11.29 GiB
    assert est.items["gradients"] == SC3B_PARAMS * 4
    assert est.items["optimizer states"] == SC3B_PARAMS * 8  # two fp32 AdamW states
    # autocast's bf16 copy of every matmul weight, kept for backward: 2 x (2,878,341,120 linear weights
    #   + the tied head 49,152 * 3,072 = 150,994,944) = 6,058,672,128 B (5.64 GiB)
    assert est.items["autocast weight copies"] == 2 * (SC3B_LINEAR + 49_152 * 3072) == 6_058_672_128
    # activations per layer per token (autocast, sdpa, no dropout), the same as with bf16 weights because
    # autocast runs LayerNorm in fp32 and casts each linear's input to bf16 either way:
    #   LN1 fp32 input 4*3072 + mean/rstd 8 = 12,296
    #   q, k, v each cast the fp32 LN output to bf16: 3 * 2 * 3072 = 18,432
    #   SDPA saves q (2*3072) k, v (2*256 each), output (2*3072), fp32 lse (4*24) = 13,408
    #   LN2 12,296; c_fc's bf16 copy 6,144; GELU input 2*12288 = 24,576; c_proj input 24,576
    #   = 111,728 x 30 layers = 3,351,840; + final norm 12,296 + lm_head's bf16 input 6,144 = 3,370,280
    #   x 2048 tokens = 6,902,333,440 B (6.43 GiB)
    assert est.items["activations"] == 6_902_333_440
    assert est.items["logits + loss (fp32)"] == 12 * 2048 * 49152  # 1.125 GiB
    # backward peak = weights + states + copies + activations + logits (grads are None at ga=1)
    #   = 12 x 3,030,371,328 + 6,058,672,128 + 6,902,333,440 + 1,207,959,552 = 50,533,421,056 B (47.06 GiB)
    assert est.backward_peak == pytest.approx(50_533_421_056)
    assert est.step_peak == pytest.approx(SC3B_PARAMS * 16)  # 48,485,941,248 B
    assert est.peak_allocated / GIB == pytest.approx(47.06, abs=0.01)
    # with gradient checkpointing: one fp32 hidden state per layer (the residual stream of fp32 weights)
    # + one recomputed layer + final norm and head input
    ckpt = estimate(SC3B, s.with_(gradient_checkpointing=True))
    assert ckpt.items["activations"] == (30 * 4 * 3072 + 111_728 + 18_440) * 2048
    assert ckpt.peak_phase == "optimizer step"
    # the trainer's chunked loss: one 1024-token chunk of fp32 logits + gradient (8 * 1024 * 49,152), the
    #   bf16 input gradient (2 * 2048 * 3072) and the fp32 head gradient (4 * 49,152 * 3072) = 1,019,215,872
    chunked = estimate(SC3B, s.with_(chunked_loss=True))
    assert chunked.items["chunked loss"] == 8 * 1024 * 49152 + 2 * 2048 * 3072 + 4 * 49152 * 3072


def test_starcoder2_3b_full_pure_bf16():
    """bf16 weights (an explicit weight_bytes=2, as bench/plan_accuracy.py measures): 2+2+4 bytes/param."""
    s = Setup(method="full", micro_batch=1, seq_len=2048, weight_bytes=2)
    est = estimate(SC3B, s)
    assert est.items["weights"] == SC3B_PARAMS * 2  # bf16: 6,060,742,656 B = 5.64 GiB
    assert est.items["gradients"] == SC3B_PARAMS * 2
    assert est.items["optimizer states"] == SC3B_PARAMS * 4  # two bf16 AdamW states
    assert est.items["autocast weight copies"] == 0  # already bf16: autocast casts nothing
    assert est.items["activations"] == 6_902_333_440
    assert est.backward_peak == pytest.approx(SC3B_PARAMS * 6 + 6_902_333_440 + 12 * 2048 * 49152)
    assert est.step_peak == pytest.approx(SC3B_PARAMS * 8)
    assert est.peak_allocated / GIB == pytest.approx(24.49, abs=0.01)
    ckpt = estimate(SC3B, s.with_(gradient_checkpointing=True))
    assert ckpt.items["activations"] == (30 * 2 * 3072 + 111_728 + 18_440) * 2048


def test_starcoder2_3b_lora():
    s = Setup(method="lora", micro_batch=1, seq_len=2048, lora_r=16)
    # adapters per layer r*(in+out): q 98,304; k 53,248; v 53,248; o 98,304; c_fc 245,760; c_proj 245,760
    #   = 794,624 x 30 = 23,838,720 fp32 params
    assert sum(t.total for t in lora_tensors(SC3B, s)) == 23_838_720
    est = estimate(SC3B, s)
    assert est.items["weights"] == SC3B_PARAMS * 2
    assert est.items["LoRA adapters (fp32)"] == 23_838_720 * 4
    assert est.items["gradients"] == 23_838_720 * 4
    assert est.items["optimizer states"] == 23_838_720 * 8
    # per layer per token: LN1 12,296; q/k/v adapters each save a bf16 copy of the dropped input
    #   (6,144) + lora_A output (32) + bool mask (3,072) = 9,248 x 3; SDPA 13,408; o adapter 9,248;
    #   LN2 12,296; c_fc adapter 9,248; GELU input 24,576; c_proj adapter 24,576 + 32 + 12,288 = 36,896
    #   = 145,712 x 30 = 4,371,360; final norm 12,296, minus layer 0's first norm (12,296) and its q/k/v
    #   masks (9,216), which frozen embeddings make unnecessary = 4,362,144 per token x 2048
    assert est.items["activations"] == 4_362_144 * 2048
    assert est.peak_allocated < estimate(SC3B, Setup(method="full", seq_len=2048)).peak_allocated


def test_starcoder2_3b_qlora():
    s = Setup(method="qlora", micro_batch=4, seq_len=512)
    # NF4 + double quant: 0.5 + 1/64 + 4/(64*256) = 0.515869140625 B per linear weight
    #   2,878,341,120 * 0.515869... = 1,484,847,360; everything else (152,030,208) upcast to fp32
    assert weight_bytes(SC3B, s) == pytest.approx(SC3B_LINEAR * 0.515869140625 + (SC3B_PARAMS - SC3B_LINEAR) * 4)
    assert weight_bytes(SC3B, s) / GIB == pytest.approx(1.949, abs=1e-3)
    no_dq = weight_bytes(SC3B, s.with_(double_quant=False))
    assert no_dq - weight_bytes(SC3B, s) == pytest.approx(SC3B_LINEAR * (4 / 64 - 1 / 64 - 4 / 16384))
    # same adapters and the same saved tensors as LoRA at the same token count (autocast: LN in fp32)
    assert activation_bytes(SC3B, s) == 4_362_144 * 2048
    # bitsandbytes dequantises the largest weight (c_fc, 37.7M) twice into fp16 during backward
    assert workspace_bytes(SC3B, s) - workspace_bytes(SC3B, s.with_(method="lora")) == 2 * 37_748_736 * 2


def test_gpt2_124m_full():
    s = Setup(method="full", micro_batch=8, seq_len=1024)
    est = estimate(GPT2, s)
    assert est.items["weights"] == 124_439_808 * 4  # fp32 master weights
    assert est.items["optimizer states"] == 124_439_808 * 8
    # bf16 copies of the matmul weights: 12 x (c_attn 1,769,472 + c_proj 589,824 + c_fc 2,359,296
    #   + c_proj 2,359,296) = 84,934,656, + the tied head 50,257 * 768 = 38,597,376 -> x 2 bytes
    assert est.items["autocast weight copies"] == 2 * (84_934_656 + 38_597_376)
    # per layer per token: LN1 3,080; c_attn bf16 copy 1,536; SDPA q,k,v (2*2304) + out 1,536 + lse 48
    #   = 6,192; two residual dropout masks 1,536; LN2 3,080; c_fc copy 1,536; gelu_new under autocast
    #   (fp32 pow copy, tanh, 1+tanh: 12*3072, plus 0.5*x in bf16 2*3072) 43,008; c_proj's bf16 copy of
    #   the fp32 GELU output 6,144 = 66,112 x 12 = 793,344
    #   + embedding dropout mask 768 + final norm 3,080 + lm_head input 1,536 = 798,728 x 8192 tokens
    assert est.items["activations"] == 798_728 * 8192
    assert logits_bytes(GPT2, s) == 12 * 8192 * 50257


def test_optimizers():
    tensors = [t for t in lora_tensors(SC3B, Setup(method="lora"))]
    n = sum(t.total for t in tensors)
    assert optimizer_state_bytes(tensors, 4, "adamw") == 8 * n
    full = Setup(method="full", seq_len=512)
    adamw = estimate(SC3B, full).items["optimizer states"]
    eight = estimate(SC3B, full.with_(optimizer="adamw_8bit")).items["optimizer states"]
    factored = estimate(SC3B, full.with_(optimizer="adafactor")).items["optimizer states"]
    assert eight < adamw / 1.9 and factored < eight / 10


def test_grows_with_batch_and_sequence():
    for shape in (SC3B, GPT2):
        for method in ("full", "lora", "qlora"):
            for ckpt in (False, True):
                base = Setup(method=method, gradient_checkpointing=ckpt)
                by_batch = [estimate(shape, base.with_(micro_batch=b, seq_len=512)) for b in (1, 2, 4, 8)]
                by_seq = [estimate(shape, base.with_(seq_len=s)) for s in (256, 512, 1024, 2048, 4096)]
                for series in (by_batch, by_seq):
                    # the backward peak grows strictly; the total never shrinks (the optimizer-step peak,
                    # which no batch or sequence changes, can dominate for small batches)
                    backward = [e.backward_peak for e in series]
                    assert all(a < b for a, b in zip(backward, backward[1:], strict=False))
                    totals = [e.total for e in series]
                    assert totals == sorted(totals)


def test_eager_attention_stores_seq_squared():
    sdpa = estimate(SC3B, Setup(seq_len=2048)).items["activations"]
    eager = estimate(SC3B, Setup(seq_len=2048, attention="eager")).items["activations"]
    # fp32 probabilities + their bf16 copy: 6 bytes x 24 heads x 2048^2 per layer, dwarfs the rest
    assert eager - sdpa > 30 * 6 * 24 * 2048**2


def test_sharding_lowers_the_per_gpu_peak():
    s = Setup(method="full", seq_len=1024, micro_batch=2)
    single = estimate(SC3B, s).total
    ddp = estimate(SC3B, s.with_(num_gpus=4, engine="ddp")).total
    zero2 = estimate(SC3B, s.with_(num_gpus=4, engine="zero2")).total
    zero3 = estimate(SC3B, s.with_(num_gpus=4, engine="zero3")).total
    fsdp = estimate(SC3B, s.with_(num_gpus=4, engine="fsdp")).total
    assert ddp > single  # gradient buckets
    assert zero3 < zero2 and fsdp < single
    assert estimate(SC3B, s.with_(num_gpus=8, engine="zero3")).total < zero3


def test_largest_micro_batch_is_the_edge():
    s = Setup(method="qlora", seq_len=1024, gradient_checkpointing=True)
    budget = 15 * GIB
    mb = largest_micro_batch(SC3B, s, budget)
    assert mb >= 1
    assert estimate(SC3B, s.with_(micro_batch=mb)).total <= budget < estimate(SC3B, s.with_(micro_batch=mb + 1)).total
    assert largest_micro_batch(SC3B, Setup(method="full", seq_len=1024), 15 * GIB) == 0
