"""Shapes from configs: exact parameter counts and saved-activation bytes against real (tiny) models.

The activation check counts what autograd really saves during a forward pass (saved_tensors_hooks,
deduplicated by storage, parameters excluded) on CPU in fp32 without autocast, and compares it with the
formula run for the same setting (CPU dropout keeps float masks, hence dropout_mask_bytes=4).
"""

from __future__ import annotations

import pytest

from codetune.plan.known_configs import KNOWN_CONFIGS
from codetune.plan.memory import Setup, activation_bytes
from codetune.plan.shapes import count_params, load_shape, shape_from_config

TINY = {
    "gpt2": dict(n_embd=64, n_head=4, n_layer=2, n_positions=128, vocab_size=300),
    "gpt_bigcode": dict(n_embd=64, n_head=4, n_layer=2, n_positions=128, vocab_size=300, multi_query=True),
    "codegen": dict(n_embd=64, n_head=4, n_layer=2, n_positions=128, n_ctx=128, vocab_size=300, rotary_dim=8),
    "starcoder2": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, vocab_size=300, max_position_embeddings=128),
    "llama": dict(hidden_size=64, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=2, vocab_size=300, max_position_embeddings=128),
}


def _tiny_model(model_type: str, attn: str = "sdpa", **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY[model_type], **extra})
    torch.manual_seed(0)
    return config, AutoModelForCausalLM.from_config(config, attn_implementation=attn)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_parameter_count_matches_the_real_model(model_type):
    config, model = _tiny_model(model_type, "eager")
    shape = shape_from_config(config.to_dict())
    assert count_params(shape) == sum(p.numel() for p in model.parameters())


def test_published_sizes_of_the_offline_table():
    published = {"bigcode/starcoder2-3b": 3.03e9, "bigcode/starcoder2-7b": 7.17e9, "bigcode/starcoder2-15b": 15.96e9,
                 "bigcode/starcoderbase-1b": 1.14e9, "Salesforce/codegen-350M-mono": 0.357e9, "gpt2": 0.1244e9}
    for name, size in published.items():
        assert count_params(shape_from_config(KNOWN_CONFIGS[name])) == pytest.approx(size, rel=0.005)


def test_load_shape_reads_a_local_directory(tmp_path):
    config, _ = _tiny_model("starcoder2")
    config.save_pretrained(tmp_path)
    shape = load_shape(str(tmp_path))
    assert shape.source == "config" and shape.hidden == 64 and shape.kv_heads == 2


def test_load_shape_falls_back_to_the_table_offline():
    shape = load_shape("bigcode/starcoderbase-1b")  # conftest sets HF_HUB_OFFLINE=1
    assert shape.source.startswith("offline table") and shape.kv_heads == 1


def _saved_bytes(model, batch: int, seq: int) -> int:
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    ids = torch.randint(0, 300, (batch, seq), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


CASES = [(mt, attn) for mt in sorted(TINY) for attn in ("sdpa", "eager") if not (mt == "codegen" and attn == "sdpa")]


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize(("model_type", "attn"), CASES)
def test_saved_activations_match_the_formula(model_type, attn, method):
    # CPU's flash kernel has no dropout, so GPT-2/GPTBigCode SDPA cases run without attention dropout
    extra = {"attn_pdrop": 0.0} if attn == "sdpa" and model_type in {"gpt2", "gpt_bigcode"} else {}
    config, model = _tiny_model(model_type, attn, **extra)
    model.train()
    setup = Setup(method=method, micro_batch=2, seq_len=32, weight_bytes=4, compute_bytes=4, autocast=False,
                  attention=attn, dropout_mask_bytes=4, lora_r=4)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.05))
    shape = shape_from_config(config.to_dict())
    measured = _saved_bytes(model, 2, 32)
    predicted = activation_bytes(shape, setup) + 4 * 2 * 32 * shape.vocab  # + log_softmax output
    assert predicted == pytest.approx(measured, rel=0.08)
