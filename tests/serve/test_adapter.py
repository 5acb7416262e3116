"""Serving base + LoRA adapter: `MODEL` may be the adapter directory itself, and the merged model answers
exactly as the PEFT model does."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False gives a non-zero B, so the adapter really changes the outputs
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


def test_serving_an_adapter_directory_matches_the_peft_model(tiny_model_dir, adapter_dir, make_client):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.config import ServeConfig
    from codetune.generation import SamplingParams, generate
    from codetune.serve.run import build_engine

    engine = build_engine(str(adapter_dir), cfg=ServeConfig(model_name="tuned"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                               str(adapter_dir)).eval()
        params = SamplingParams(max_new_tokens=10)
        expected = generate(peft_model, tokenizer, ["def add(a, b):\n"], params)[0][0].text
        client = make_client(engine=engine)
        got = client.post("/v1/completions", json={"model": "tuned", "prompt": "def add(a, b):\n",
                                                   "max_tokens": 10, "temperature": 0}).json()
        assert got["choices"][0]["text"] == expected
        with peft_model.disable_adapter():
            base_text = generate(peft_model, tokenizer, ["def add(a, b):\n"], params)[0][0].text
        assert base_text != expected  # the adapter mattered
    finally:
        engine.close()
