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
               device_map=None):
    """A causal LM in eval mode (callers switch to train), with `adapter` applied when given."""
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
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise CodetuneError(f"no LoRA adapter at {adapter} (adapter_config.json missing)")
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model
