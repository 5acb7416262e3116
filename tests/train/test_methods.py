"""Full, LoRA (and DoRA) and QLoRA each train a few steps with finite, falling loss, write every artifact,
and the final model reloads through plain transformers / peft."""

from __future__ import annotations

import json
import math

import pytest


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, [r["loss"] for r in rows if "loss" in r]


def _check_run(result, cfg):
    run_dir = cfg.run_dir
    rows, losses = _losses(run_dir)
    assert [r["step"] for r in rows] == list(range(1, cfg.train.max_steps + 1))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    for key in ("epoch", "lr", "grad_norm", "tokens_seen", "tokens_per_s", "peak_memory_mb"):
        assert rows[-1][key] is not None, key
    assert rows[-1]["tokens_seen"] == cfg.train.max_steps * 2 * 64
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[-1]["perplexity"] == pytest.approx(math.exp(evals[-1]["eval_loss"]))
    for name in ("train_loss.png", "eval_loss.png", "learning_rate.png", "tokens_per_s.png", "report.html"):
        assert (run_dir / "report" / name).stat().st_size > 0, name
    card = (result.final_dir / "README.md").read_text()
    assert "base_model:" in card and "## Final metrics" in card and cfg.model.name_or_path in card
    assert (run_dir / "config.yaml").is_file()
    return rows


def _batch():
    import torch

    return torch.arange(1, 33).reshape(1, 32) % 200 + 10


def test_full_finetune_trains_and_reloads(make_cfg):
    import torch
    from transformers import AutoModelForCausalLM

    from codetune.train.run import run

    cfg = make_cfg()
    result = run(cfg)
    _check_run(result, cfg)
    assert (result.final_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(result.final_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path).eval()
    with torch.no_grad():
        assert not torch.equal(model(_batch()).logits, base(_batch()).logits)  # the weights did change
    assert "trained to step 6" in result.summary()


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_lora_trains_and_reloads_with_peft(make_cfg, dora):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from codetune.train.run import run

    cfg = make_cfg(
        "method.kind=lora", "method.r=4", f"method.use_dora={str(dora).lower()}", "train.learning_rate=5e-3"
    )
    result = run(cfg)
    _check_run(result, cfg)
    adapter_cfg = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert adapter_cfg["use_dora"] is dora
    # all-linear: attention and MLP projections of StarCoder2, never the head
    targets = {name.rsplit(".", 1)[-1] for name in adapter_cfg["target_modules"]}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"}
    model = AutoPeftModelForCausalLM.from_pretrained(str(result.final_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path).eval()
    with torch.no_grad():
        assert not torch.allclose(model(_batch()).logits, base(_batch()).logits)


def test_qlora_trains_on_4bit_base_and_reloads(make_cfg):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from peft import AutoPeftModelForCausalLM

    from codetune.train.run import run

    seen = {}

    from transformers import TrainerCallback

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["linear4bit"] = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
            seen["quant"] = model.base_model.model.config.quantization_config

    cfg = make_cfg("method.kind=qlora", "method.r=4", "train.learning_rate=5e-3")
    result = run(cfg, extra_callbacks=[Inspect()])
    _check_run(result, cfg)
    assert seen["linear4bit"] >= 12  # 2 layers x (q, k, v, o, c_fc, c_proj)
    quant = seen["quant"]
    quant = quant.to_dict() if hasattr(quant, "to_dict") else quant
    assert quant["bnb_4bit_quant_type"] == "nf4" and quant["bnb_4bit_use_double_quant"] is True
    AutoPeftModelForCausalLM.from_pretrained(str(result.final_dir))  # adapter loads on a plain base


def test_special_tokens_resize_embeddings_and_train_their_rows(make_cfg, tmp_path, prepared_data):
    """A GPT-2 user adds their own tokens: the embeddings grow and, under LoRA, the new rows are trained."""
    import torch
    from peft import AutoPeftModelForCausalLM

    from codetune.config import ModelConfig
    from codetune.modeling import load_tokenizer, tokenizer_fingerprint
    from codetune.train.run import run
    from tests.train.conftest import write_prepared

    cfg = make_cfg(
        "model.special_tokens=['<|user|>','<|assistant|>']",
        "method.kind=lora",
        "method.r=4",
        "train.max_steps=3",
        data=False,
    )
    tokenizer = load_tokenizer(
        ModelConfig(name_or_path=cfg.model.name_or_path, special_tokens=cfg.model.special_tokens)
    )
    texts = [f"<|user|> write json <|assistant|> {i} import json\n" * 8 for i in range(40)]
    write_prepared(cfg.run_dir / "data", tokenizer, tokenizer_fingerprint(tokenizer), texts)
    result = run(cfg)
    model = AutoPeftModelForCausalLM.from_pretrained(str(result.final_dir))
    emb = model.get_input_embeddings()
    new_id = tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert model.base_model.model.config.vocab_size == len(tokenizer) > new_id >= 2048
    merged = model.merge_and_unload().get_input_embeddings().weight
    assert emb is not None and torch.isfinite(merged[new_id]).all()
    base_mean = merged[:2048].mean(0)
    assert not torch.allclose(merged[new_id], base_mean)  # moved away from its mean initialisation
