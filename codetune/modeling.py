"""Load a base model and tokenizer (hub name or local path) the way every flow needs them: dtype chosen
for the device, attention kernel chosen for the architecture, a pad token guaranteed, an optional
LoRA adapter on top. Shared by train, evaluate and serve.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from codetune.errors import CodetuneError

if TYPE_CHECKING:  # pragma: no cover
    from codetune.config import ModelConfig


def _hub_hint(name: str, exc: Exception) -> CodetuneError:
    local = Path(name).expanduser()
    if local.exists() or name.startswith((".", "/", "~")):
        return CodetuneError(f"cannot load {name}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    return CodetuneError(
        f"cannot load {name!r} from the Hugging Face Hub (offline or unknown repo?): "
        f"{exc.__class__.__name__}; pass a local directory instead"
    )


def load_tokenizer(model_cfg: ModelConfig):
    """The model's tokenizer with a pad token (EOS when the tokenizer has none) and config special tokens."""
    from transformers import AutoTokenizer

    name = model_cfg.tokenizer or model_cfg.name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        raise _hub_hint(name, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    new = [t for t in model_cfg.special_tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary and special tokens: equal iff token ids mean the same thing."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = json.dumps([vocab, tokenizer.eos_token, tokenizer.pad_token], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str = "auto"):
    """bf16 on GPUs that support it, fp16 on those that don't (T4), fp32 on CPU (bf16 is ~25x slower there)."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_attn_implementation(setting: str, config) -> str | None:
    """sdpa where the architecture supports it (CodeGen has eager only); None lets transformers decide."""
    if setting != "auto":
        return setting
    from transformers import AutoModelForCausalLM

    model_cls = AutoModelForCausalLM._model_mapping.get(type(config), None)
    return "sdpa" if getattr(model_cls, "_supports_sdpa", False) else "eager"


def load_config_only(model_cfg: ModelConfig):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            model_cfg.name_or_path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except Exception as exc:
        raise _hub_hint(model_cfg.name_or_path, exc) from None


def load_model(model_cfg: ModelConfig, adapter: str | Path | None = None, quantization_config=None,
               device_map=None, tokenizer=None):
    """A causal LM in eval mode (callers switch to train), with `adapter` applied when given. With `tokenizer`,
    embeddings grow to its size first (tokens added by config, or an adapter trained with them)."""
    from transformers import AutoModelForCausalLM

    config = load_config_only(model_cfg)
    kwargs = {
        "revision": model_cfg.revision,
        "trust_remote_code": model_cfg.trust_remote_code,
        "dtype": resolve_dtype(model_cfg.dtype),
        "attn_implementation": resolve_attn_implementation(model_cfg.attn_implementation, config),
    }
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(model_cfg.name_or_path, **kwargs)
    except CodetuneError:
        raise
    except Exception as exc:
        raise _hub_hint(model_cfg.name_or_path, exc) from None
    if tokenizer is not None:
        resize_for_tokenizer(model, tokenizer)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise CodetuneError(f"no LoRA adapter at {adapter} (adapter_config.json missing)")
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model


# ---- training additions: quantization, special-token embeddings, full | lora | qlora ----


def max_positions(config) -> int | None:
    """The longest sequence the architecture's position scheme allows (None when it does not say)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def quantization_config(method_cfg, dtype):
    """bitsandbytes 4-bit (NF4 by default, double quantization) for QLoRA; compute dtype follows `dtype`."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = dtype if method_cfg.compute_dtype == "auto" else getattr(torch, method_cfg.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method_cfg.quant_type,
        bnb_4bit_use_double_quant=method_cfg.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def resize_for_tokenizer(model, tokenizer) -> list[int]:
    """Grow the embeddings to the tokenizer's size; returns the ids of the new rows (to train under LoRA).

    New rows start at the mean of the old ones (transformers' mean_resizing), so the added tokens begin
    with a sensible, non-random distribution instead of dominating the first steps.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return []
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return list(range(old, len(tokenizer)))


def apply_method(
    model, method_cfg, new_token_ids: list[int] | None = None, gradient_checkpointing: bool = False
):
    """Make `model` trainable the way `method_cfg.kind` says: every weight (full) or a LoRA/DoRA adapter
    (lora; qlora on a 4-bit base). Embedding rows of newly added tokens are trained under LoRA too."""
    if method_cfg.kind == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if method_cfg.kind == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    lora = LoraConfig(
        r=method_cfg.r,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=method_cfg.target_modules,
        use_dora=method_cfg.use_dora,
        task_type="CAUSAL_LM",
        trainable_token_indices=list(new_token_ids) if new_token_ids else None,
    )
    return get_peft_model(model, lora)
