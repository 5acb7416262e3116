"""Entry point of `codetune serve`: load the model (base, fine-tuned checkpoint, or base + LoRA adapter),
build the engine and the app, and run uvicorn until interrupted.

MODEL may itself be a LoRA adapter directory (a training checkpoint): its base model is then read from
its adapter_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from codetune.config import ModelConfig, ServeConfig, _format_validation_error
from codetune.errors import CodetuneError, ConfigError


def resolve_model(model: str, adapter: str | None) -> tuple[str, str | None]:
    """(base model, adapter): a MODEL that is an adapter directory stands for its base plus itself."""
    config = Path(model) / "adapter_config.json"
    if adapter is None and config.is_file():
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise CodetuneError(f"{config} names no base_model_name_or_path; pass the base as MODEL and "
                                f"--adapter {model}")
        return base, model
    return model, adapter


def build_engine(model: str, adapter: str | None = None, cfg: ServeConfig | None = None, dtype: str = "auto"):
    """The engine `cfg.engine` names, with the model loaded; the vLLM check runs before any loading."""
    from codetune.modeling import load_model, load_tokenizer

    cfg = cfg or ServeConfig()
    base, adapter = resolve_model(model, adapter)
    tokenizer_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else None
    model_cfg = ModelConfig(name_or_path=base, tokenizer=tokenizer_source, dtype=dtype)
    model_id = cfg.model_name or model
    if cfg.engine == "vllm":
        from codetune.serve.vllm_engine import VllmEngine, check_vllm

        check_vllm()
        return VllmEngine(base, load_tokenizer(model_cfg), model_id, adapter=adapter)
    from codetune.serve.engine import TransformersEngine

    tokenizer = load_tokenizer(model_cfg)
    loaded = load_model(model_cfg, adapter=adapter)
    if adapter is not None:  # one merged matrix per layer: the adapter costs nothing per token
        loaded = loaded.merge_and_unload()
    if loaded.device.type == "cpu":
        import torch

        if torch.cuda.is_available():
            loaded = loaded.to("cuda")
    return TransformersEngine(loaded, tokenizer, model_id, max_batch_size=cfg.max_batch_size,
                              batch_wait_ms=cfg.batch_wait_ms)


def serve_config(**options) -> ServeConfig:
    try:
        return ServeConfig(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc).replace("config error: `", "config error: `serve.")) from None


def run(model: str, adapter: str | None = None, dtype: str = "auto", **options) -> None:
    """Serve until Ctrl-C. `options` are ServeConfig fields (host, port, api_key, engine, ...)."""
    import uvicorn
    from rich.console import Console

    from codetune.serve.app import create_app

    cfg = serve_config(**options)
    console = Console(stderr=True)
    with console.status(f"loading {model}" + (f" + {adapter}" if adapter else "")):
        engine = build_engine(model, adapter, cfg, dtype=dtype)
    app = create_app(engine, api_key=cfg.api_key, max_tokens_cap=cfg.max_tokens_cap)
    console.print(f"serving [bold]{engine.model_id}[/] ({engine.name} engine, context {engine.context_length}) "
                  f"on http://{cfg.host}:{cfg.port}  playground: http://{cfg.host}:{cfg.port}/")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
