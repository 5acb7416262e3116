"""Architectural fields of the public config.json files of the hub models our recipes use.

Used only when `AutoConfig.from_pretrained` cannot reach the hub (offline machines), and the plan says so.
Values are copied from each repository's config.json on huggingface.co (checked 2026-11); fields that are
absent there take the transformers class default (StarCoder2-3B/7B omit `tie_word_embeddings`, so they
tie, as `Starcoder2Config` defaults to; 15B sets it false).
"""

from __future__ import annotations

_STARCODER2 = {"model_type": "starcoder2", "vocab_size": 49152, "max_position_embeddings": 16384,
               "hidden_act": "gelu_pytorch_tanh", "use_bias": True, "norm_type": "layer_norm",
               "attention_dropout": 0.0, "residual_dropout": 0.0, "embedding_dropout": 0.0}

KNOWN_CONFIGS: dict[str, dict] = {
    "bigcode/starcoder2-3b": {**_STARCODER2, "hidden_size": 3072, "intermediate_size": 12288,
                              "num_attention_heads": 24, "num_hidden_layers": 30, "num_key_value_heads": 2,
                              "tie_word_embeddings": True},
    "bigcode/starcoder2-7b": {**_STARCODER2, "hidden_size": 4608, "intermediate_size": 18432,
                              "num_attention_heads": 36, "num_hidden_layers": 32, "num_key_value_heads": 4,
                              "tie_word_embeddings": True},
    "bigcode/starcoder2-15b": {**_STARCODER2, "hidden_size": 6144, "intermediate_size": 24576,
                               "num_attention_heads": 48, "num_hidden_layers": 40, "num_key_value_heads": 4,
                               "tie_word_embeddings": False},
    "bigcode/starcoderbase-1b": {"model_type": "gpt_bigcode", "n_embd": 2048, "n_head": 16, "n_inner": 8192,
                                 "n_layer": 24, "n_positions": 8192, "vocab_size": 49152, "multi_query": True,
                                 "activation_function": "gelu_pytorch_tanh", "attn_pdrop": 0.1,
                                 "resid_pdrop": 0.1, "embd_pdrop": 0.1, "tie_word_embeddings": True},
    "Salesforce/codegen-350M-mono": {"model_type": "codegen", "n_embd": 1024, "n_head": 16, "n_inner": None,
                                     "n_layer": 20, "n_positions": 2048, "n_ctx": 2048, "rotary_dim": 32,
                                     "vocab_size": 51200, "activation_function": "gelu_new", "attn_pdrop": 0.0,
                                     "resid_pdrop": 0.0, "embd_pdrop": 0.0, "tie_word_embeddings": False},
    "gpt2": {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
             "vocab_size": 50257, "activation_function": "gelu_new", "attn_pdrop": 0.1, "resid_pdrop": 0.1,
             "embd_pdrop": 0.1, "tie_word_embeddings": True},
}
KNOWN_CONFIGS["openai-community/gpt2"] = KNOWN_CONFIGS["gpt2"]
