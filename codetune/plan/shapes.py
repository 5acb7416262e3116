"""A model's shape, read from its Hugging Face config alone, and its exact list of parameter tensors.

`shape_from_config` normalises the many spellings of a causal LM config (GPT-2's `n_embd`, CodeGen's
`n_inner`, GPTBigCode's `multi_query`, StarCoder2's `use_bias`, Llama's `head_dim`) into one `ModelShape`.
`param_tensors` lays out every parameter tensor the matching transformers class creates, so parameter
counts are exact (tests compare them with `sum(p.numel())` of real models) and the memory formula can
treat each tensor by kind: linear weights (LoRA targets, NF4-quantised under QLoRA), embeddings, norms and
biases. Families the table does not know are laid out like Llama and say so in `notes`.

No torch or transformers import here: `load_shape` imports transformers lazily, and the offline table in
`known_configs` covers the hub models our recipes use when the hub cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Activation functions that transformers implements as a chain of Python ops (each op saves tensors for
# backward) instead of one fused kernel; see transformers/activations.py NewGELUActivation.
PYTHON_ACTIVATIONS = {"gelu_new", "gelu_fast", "gelu_python"}
GATED_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite", "olmo", "olmo2",
                  "cohere", "internlm2", "deepseek", "yi", "code_llama"}


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    tied_embeddings: bool
    gated_mlp: bool
    norm: str  # "layernorm" (weight + bias) or "rmsnorm" (weight only)
    fused_qkv: bool  # one projection for q, k, v (GPT-2, GPTBigCode, CodeGen)
    parallel_block: bool  # attention and MLP read the same norm output (CodeGen / GPT-J)
    attn_bias: bool
    mlp_bias: bool
    lm_head_bias: bool
    learned_positions: bool
    activation: str
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    embd_dropout: float = 0.0
    eager_only: bool = False  # no SDPA implementation in transformers (CodeGen)
    fp32_attention_scores: bool = False  # eager attention computes q.k in fp32 (CodeGen)
    source: str = "config"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class ParamTensor:
    """One parameter tensor (or `count` identical ones, one per layer). `module` is the HF module name's
    last part (q_proj, c_attn, ...) so LoRA target lists can be matched against it."""

    name: str
    dims: tuple[int, ...]
    kind: str  # linear | bias | embedding | norm | lm_head
    module: str
    count: int = 1

    @property
    def numel(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def total(self) -> int:
        return self.numel * self.count


def _first(d: dict, *keys, default=None):
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return default


def shape_from_config(cfg: dict, source: str = "config") -> ModelShape:
    """Normalise a config dict (`PretrainedConfig.to_dict()` or a config.json) into a ModelShape."""
    model_type = str(cfg.get("model_type", "unknown"))
    hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
    layers = int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    heads = int(_first(cfg, "num_attention_heads", "n_head"))
    vocab = int(cfg["vocab_size"])
    max_positions = int(_first(cfg, "max_position_embeddings", "n_positions", "n_ctx", default=2048))
    head_dim = int(_first(cfg, "head_dim", default=hidden // heads))
    notes: list[str] = []
    common = dict(model_type=model_type, layers=layers, hidden=hidden, heads=heads, head_dim=head_dim,
                  vocab=vocab, max_positions=max_positions, source=source)

    if model_type in {"gpt2", "gpt_bigcode"}:
        multi_query = bool(cfg.get("multi_query", False)) if model_type == "gpt_bigcode" else False
        return ModelShape(
            **common, kv_heads=1 if multi_query else heads,
            intermediate=int(_first(cfg, "n_inner", default=4 * hidden)),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", True)), gated_mlp=False, norm="layernorm",
            fused_qkv=True, parallel_block=False, attn_bias=True, mlp_bias=True, lm_head_bias=False,
            learned_positions=True, activation=str(_first(cfg, "activation_function", default="gelu_new")),
            attn_dropout=float(cfg.get("attn_pdrop", 0.0)), resid_dropout=float(cfg.get("resid_pdrop", 0.0)),
            embd_dropout=float(cfg.get("embd_pdrop", 0.0)),
        )
    if model_type == "codegen":
        return ModelShape(
            **common, kv_heads=heads, intermediate=int(_first(cfg, "n_inner", default=4 * hidden)),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), gated_mlp=False, norm="layernorm",
            fused_qkv=True, parallel_block=True, attn_bias=False, mlp_bias=True, lm_head_bias=True,
            learned_positions=False, activation=str(_first(cfg, "activation_function", default="gelu_new")),
            attn_dropout=float(cfg.get("attn_pdrop", 0.0)), resid_dropout=float(cfg.get("resid_pdrop", 0.0)),
            embd_dropout=float(cfg.get("embd_pdrop", 0.0)), eager_only=True, fp32_attention_scores=True,
        )
    if model_type == "starcoder2":
        bias = bool(cfg.get("use_bias", True))
        return ModelShape(
            **common, kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
            intermediate=int(cfg["intermediate_size"]), tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            gated_mlp=False, norm="layernorm", fused_qkv=False, parallel_block=False, attn_bias=bias,
            mlp_bias=bias, lm_head_bias=False, learned_positions=False,
            activation=str(_first(cfg, "hidden_act", default="gelu_pytorch_tanh")),
            attn_dropout=float(cfg.get("attention_dropout", 0.0)),
            resid_dropout=float(cfg.get("residual_dropout", 0.0)),
            embd_dropout=float(cfg.get("embedding_dropout", 0.0)),
        )
    if model_type not in GATED_FAMILIES:
        notes.append(f"model_type {model_type!r} is not in the planner's table: laid out like Llama "
                     "(gated MLP, RMSNorm); parameter count and memory are approximate")
    attn_bias = bool(cfg.get("attention_bias", model_type == "qwen2"))
    return ModelShape(
        **common, kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
        intermediate=int(_first(cfg, "intermediate_size", default=4 * hidden)),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), gated_mlp=True, norm="rmsnorm",
        fused_qkv=False, parallel_block=False, attn_bias=attn_bias, mlp_bias=bool(cfg.get("mlp_bias", False)),
        lm_head_bias=False, learned_positions=False, activation=str(_first(cfg, "hidden_act", default="silu")),
        attn_dropout=float(cfg.get("attention_dropout", 0.0)), notes=tuple(notes),
    )


def _linear(name: str, module: str, d_in: int, d_out: int, bias: bool, count: int) -> list[ParamTensor]:
    out = [ParamTensor(f"{name}.weight", (d_out, d_in), "linear", module, count)]
    if bias:
        out.append(ParamTensor(f"{name}.bias", (d_out,), "bias", module, count))
    return out


def _norm(name: str, shape: ModelShape, count: int) -> list[ParamTensor]:
    out = [ParamTensor(f"{name}.weight", (shape.hidden,), "norm", name.rsplit(".", 1)[-1], count)]
    if shape.norm == "layernorm":
        out.append(ParamTensor(f"{name}.bias", (shape.hidden,), "norm", name.rsplit(".", 1)[-1], count))
    return out


def param_tensors(shape: ModelShape) -> list[ParamTensor]:
    """Every parameter tensor, per-layer ones with count=layers. Linear weights are (out, in) whatever the
    storage (GPT-2's Conv1D stores (in, out); the element count is what matters)."""
    h, f, n = shape.hidden, shape.intermediate, shape.layers
    tensors = [ParamTensor("embed_tokens.weight", (shape.vocab, h), "embedding", "embed_tokens")]
    if shape.learned_positions:
        tensors.append(ParamTensor("embed_positions.weight", (shape.max_positions, h), "embedding", "wpe"))
    tensors += _norm("layers.norm_1", shape, n)
    if shape.fused_qkv:
        module = "qkv_proj" if shape.model_type == "codegen" else "c_attn"
        tensors += _linear(f"layers.attn.{module}", module, h, shape.q_dim + 2 * shape.kv_dim, shape.attn_bias, n)
        out_module = "out_proj" if shape.model_type == "codegen" else "c_proj"
        tensors += _linear(f"layers.attn.{out_module}", out_module, shape.q_dim, h, shape.attn_bias, n)
    else:
        tensors += _linear("layers.attn.q_proj", "q_proj", h, shape.q_dim, shape.attn_bias, n)
        tensors += _linear("layers.attn.k_proj", "k_proj", h, shape.kv_dim, shape.attn_bias, n)
        tensors += _linear("layers.attn.v_proj", "v_proj", h, shape.kv_dim, shape.attn_bias, n)
        o_bias = shape.attn_bias and shape.model_type != "qwen2"  # Qwen2 has biases on q, k, v only
        tensors += _linear("layers.attn.o_proj", "o_proj", shape.q_dim, h, o_bias, n)
    if not shape.parallel_block:
        tensors += _norm("layers.norm_2", shape, n)
    if shape.gated_mlp:
        tensors += _linear("layers.mlp.gate_proj", "gate_proj", h, f, shape.mlp_bias, n)
        tensors += _linear("layers.mlp.up_proj", "up_proj", h, f, shape.mlp_bias, n)
        tensors += _linear("layers.mlp.down_proj", "down_proj", f, h, shape.mlp_bias, n)
    elif shape.model_type == "codegen":
        tensors += _linear("layers.mlp.fc_in", "fc_in", h, f, shape.mlp_bias, n)
        tensors += _linear("layers.mlp.fc_out", "fc_out", f, h, shape.mlp_bias, n)
    else:
        tensors += _linear("layers.mlp.c_fc", "c_fc", h, f, shape.mlp_bias, n)
        tensors += _linear("layers.mlp.c_proj", "c_proj", f, h, shape.mlp_bias, n)
    tensors += _norm("final_norm", shape, 1)
    if not shape.tied_embeddings:
        tensors.append(ParamTensor("lm_head.weight", (shape.vocab, h), "lm_head", "lm_head"))
    if shape.lm_head_bias:
        tensors.append(ParamTensor("lm_head.bias", (shape.vocab,), "bias", "lm_head"))
    return tensors


def count_params(shape: ModelShape) -> int:
    return sum(t.total for t in param_tensors(shape))


def matmul_params(shape: ModelShape) -> int:
    """Weights that take part in a matrix product per token: every linear layer plus the output head
    (tied or not). Embedding lookups, norms and biases do no matmul work."""
    linear = sum(t.total for t in param_tensors(shape) if t.kind == "linear")
    return linear + shape.vocab * shape.hidden


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    """A quick TCP check, so an offline machine falls back at once instead of after the hub client's
    retries (about 40 s)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in {"", "0", "false", "False"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_shape(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> ModelShape:
    """Read the shape through `AutoConfig` (local directory, HF cache, or hub; no weights). When the hub
    cannot be reached, fall back to the shipped table of public configs and say so in `source`."""
    from pathlib import Path

    from transformers import AutoConfig

    from codetune.errors import ConfigError
    from codetune.plan.known_configs import KNOWN_CONFIGS

    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    attempts = [dict(kwargs, local_files_only=True)]
    if not Path(name_or_path).exists() and _hub_reachable():
        attempts.append(kwargs)
    reason = "hub unreachable"
    for attempt in attempts:
        try:
            config = AutoConfig.from_pretrained(name_or_path, **attempt)
        except Exception as exc:  # noqa: BLE001 - missing dir, gated repo, offline: all end in the fallback
            reason = " ".join(str(exc).split())[:160]
            continue
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return shape_from_config(text_config.to_dict(), source="config")
    known = KNOWN_CONFIGS.get(name_or_path)
    if known is None:
        raise ConfigError(f"plan: cannot read the config of `{name_or_path}` ({reason}); give a local model "
                          "directory or a hub name that can be reached")
    return shape_from_config(known, source="offline table (hub unreachable; public config.json values)")
