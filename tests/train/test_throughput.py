"""Speed without changing what is learned: packed rows attend only within their documents (logits and the
trainer's loss equal those of each document alone), the chunked cross-entropy equals transformers' loss
and gradients, useful-token and MFU accounting on hand-worked numbers, and metrics.jsonl carries them."""

from __future__ import annotations

import json

import pytest

DOC_LENGTHS = (20, 12, 9)  # three documents packed into one 41-token row


def _docs(vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, vocab, (1, n), generator=g) for n in DOC_LENGTHS]


def _packed(docs):
    import torch

    ids = torch.cat(docs, dim=1)
    positions = torch.cat([torch.arange(d.shape[1]) for d in docs]).unsqueeze(0)
    return ids, positions


def _load(model_dir, attn: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn).eval()


@pytest.mark.parametrize(
    "arch,attn",
    [("starcoder2", "sdpa"), ("starcoder2", "eager"), ("gpt2", "sdpa"), ("gpt_bigcode", "sdpa"),
     ("codegen", "eager")],
)
def test_packed_row_logits_equal_each_document_alone(tiny_model_factory, arch, attn):
    """What the trainer passes (position_ids restarting per document, no attention mask, no KV cache) makes
    transformers build a block-diagonal causal mask, with SDPA and eager alike."""
    import torch

    model = _load(tiny_model_factory(arch), attn)
    docs = _docs(model.config.vocab_size)
    ids, positions = _packed(docs)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        alone = torch.cat([model(input_ids=d, use_cache=False).logits for d in docs], dim=1)
        leaky = model(input_ids=ids, position_ids=positions).logits  # the config's default use_cache=True
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
    # transformers skips packed-sequence detection when a KV cache exists: later documents see earlier ones
    assert (leaky[:, DOC_LENGTHS[0] :] - alone[:, DOC_LENGTHS[0] :]).abs().max() > 1e-3


def _trainer(model, tmp_path, fused: bool):
    from transformers import TrainingArguments

    from codetune.train.trainer import CodetuneTrainer, collate

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True)
    return CodetuneTrainer(model=model, args=args, data_collator=collate, run_dir=tmp_path, keep_last=1,
                           fused_loss=fused)


@pytest.mark.parametrize("fused", [True, False], ids=["chunked_ce", "transformers_ce"])
def test_trainer_loss_on_a_packed_row_equals_documents_alone(tiny_model_dir, tmp_path, fused):
    import torch

    model = _load(tiny_model_dir, "sdpa")
    docs = _docs(model.config.vocab_size)
    ids, positions = _packed(docs)
    labels = ids.clone()
    labels[0, 5:8] = -100  # masked tokens are skipped in both paths
    # the row also predicts each document's first token from the previous document's last one (transformers'
    # shifted labels do that for any row); the data flow puts EOS there. Masked here to compare with the
    # documents alone.
    for start in (DOC_LENGTHS[0], DOC_LENGTHS[0] + DOC_LENGTHS[1]):
        labels[0, start] = -100
    trainer = _trainer(model, tmp_path, fused)
    with torch.no_grad():
        loss = trainer.compute_loss(model, {"input_ids": ids, "labels": labels, "position_ids": positions})
        total, count, offset = 0.0, 0, 0
        for d in docs:
            logits = model(input_ids=d, use_cache=False).logits[0, :-1]
            targets = labels[0, offset + 1 : offset + d.shape[1]]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
            offset += d.shape[1]
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    # outside compute_loss the model is untouched: full-vocabulary logits again
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


def test_chunked_cross_entropy_matches_values_and_gradients():
    import torch
    import torch.nn.functional as F

    from codetune.train.fused_loss import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = (torch.randn(300, 16, generator=g) * 0.1).requires_grad_()
    bias = torch.randn(300, generator=g, requires_grad=True)
    targets = torch.randint(0, 300, (37,), generator=g)
    targets[[0, 7, 8]] = -100
    ref = F.cross_entropy(hidden @ weight.T + bias, targets, reduction="sum") / 50
    ref.backward()
    expected = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    out = linear_cross_entropy(hidden, weight, bias, targets, num_items=torch.tensor(50), chunk=10)
    (out * 3).backward()  # an upstream gradient other than 1 must scale the stored gradients
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    for want, t in zip(expected, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(t.grad, 3 * want, atol=1e-6, rtol=1e-5)
    # a frozen head (LoRA) gets no gradient and the mean is over labelled tokens
    frozen = weight.detach()
    mean = linear_cross_entropy(hidden, frozen, None, targets, chunk=8)
    assert mean.item() == pytest.approx(F.cross_entropy(hidden @ frozen.T, targets).item(), rel=1e-6)


def test_useful_tokens_and_mfu_by_hand(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from codetune.train.throughput import ThroughputMeter, mfu, model_flops_per_token, useful_tokens

    assert useful_tokens([[1, 2, -100], [-100, 5, 6]]) == 4
    meter = ThroughputMeter()
    meter.count(torch.tensor([[1, -100, -100]]))
    meter.count(torch.tensor([[3, 4, -100]]))
    assert meter.total() == 3 and meter.total() == 3
    # 1,000 useful tokens/s x 6 MFLOP per token on a 100 GFLOP/s device = 6%
    assert mfu(1000.0, 6e6, 1e11) == pytest.approx(0.06)
    assert mfu(None, 6e6, 1e11) is None

    model = _load(tiny_model_dir, "sdpa")
    # tiny StarCoder2: h=64, 2 layers, 4 heads of 16, 2 kv heads (kv_dim 32), f=256, vocab 2048 (tied)
    #   per layer q 64*64 + k 64*32 + v 64*32 + o 64*64 + c_fc 64*256 + c_proj 256*64 = 45,056 x 2 = 90,112
    #   + output head 2048*64 = 131,072 -> N = 221,184 matmul weights; 6N = 1,327,104
    #   attention 12 * layers * q_dim * seq = 12 * 2 * 64 * 64 = 98,304 at seq 64
    assert model.config.vocab_size == 2048
    assert model_flops_per_token(model, 64) == 1_327_104 + 98_304
    # LoRA r=8 on every linear: r*(in+out) = q 1,024 + k 768 + v 768 + o 1,024 + c_fc 2,560 + c_proj 2,560
    #   = 8,704 x 2 layers = 17,408 adapters; 4N + 6 x 17,408 + attention = 884,736 + 104,448 + 98,304
    lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert model_flops_per_token(lora, 64) == 1_087_488


def test_measured_peak_is_cached_and_positive():
    from codetune.train.throughput import measured_peak_flops

    first = measured_peak_flops("cpu", "float32", 1)
    assert first > 1e8 and measured_peak_flops("cpu", "float32", 1) == first


def test_metrics_rows_carry_useful_tokens_per_s_and_mfu(make_cfg):
    from codetune.report.training import summary_rows
    from codetune.train.run import run

    cfg = make_cfg("train.max_steps=3", "train.save_steps=3")
    run(cfg)
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert len(train_rows) == 3
    for row in train_rows:
        assert row["useful_tokens_per_s"] > 0
        assert 0 < row["mfu"] < 1
        assert row["peak_flops"] > 0
        # padding and masked tokens never count: at most every row position is useful
        assert row["useful_tokens_per_s"] <= row["tokens_per_s"] * 1.0001
    names = dict(summary_rows(rows))
    assert names["median useful tokens/s"] > 0 and 0 < names["median MFU (%)"] < 100


def test_measuring_the_peak_leaves_the_global_rng_alone():
    """The first run in a process measures the matmul peak; it must not shift that run's dropout masks."""
    import torch

    from codetune.train.throughput import measured_peak_flops

    measured_peak_flops.cache_clear()
    before = torch.get_rng_state()
    assert measured_peak_flops("cpu", "float32", torch.get_num_threads()) > 0
    assert torch.equal(before, torch.get_rng_state())
