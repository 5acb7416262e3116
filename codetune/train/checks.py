"""Refusals made before any work: each is one line that says what to change.

- output_dir holds a different run's config.yaml (unless --force), or this run's checkpoints and no
  --resume (so a restart never silently mixes with, or overwrites, what is there);
- QLoRA, 8-bit AdamW without bitsandbytes; a tracker in `report_to` whose package is missing;
- data.seq_len beyond the model's positions; fp16 without a GPU;
- a prepared dataset tokenized by another tokenizer (fingerprint), or packed at another seq_len.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from codetune.errors import ConfigError, RefusedError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """Dotted path of the first key whose value differs between two config dicts (None when equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                return where
            found = first_difference(old[key], new[key], where)
            if found:
                return found
        return None
    return None if old == new else (prefix or "<root>")


def read_existing_config(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {"<unreadable config.yaml>": True}
    return raw if isinstance(raw, dict) else {"<unreadable config.yaml>": True}


def check_foreign_run(cfg, force: bool, has_training_artifacts: bool) -> list[str]:
    """Refuse an output_dir that holds another run; returns the top-level config sections that differ.

    A config that differs only outside `name`/`model`/`data` is the same run when nothing was trained
    yet (prepare, then train with other hyperparameters); once checkpoints or metrics exist it is not.
    """
    existing = read_existing_config(cfg.run_dir)
    if existing is None:
        return []
    new = cfg.model_dump(mode="json")
    sections = [
        k for k in dict.fromkeys([*existing, *new]) if first_difference(existing.get(k), new.get(k), k)
    ]
    identity = {"name", "model", "data"} & set(sections)
    if sections and (identity or has_training_artifacts) and not force:
        raise RefusedError(
            f"{cfg.run_dir} holds a different run's config.yaml (first difference: "
            f"`{first_difference(existing, new)}`); use another output_dir, or --force to replace that run"
        )
    return sections


def check_existing_progress(
    cfg, resume: str | None, force: bool, has_checkpoints: bool, finished: bool
) -> None:
    if resume is not None or force:
        return
    if finished:
        raise RefusedError(
            f"{cfg.run_dir} already holds a finished run (final/); --force retrains it from scratch"
        )
    if has_checkpoints:
        raise RefusedError(
            f"{cfg.run_dir} holds checkpoints of this run; pass --resume auto to continue it "
            "or --force to start over"
        )


def check_packages(cfg) -> None:
    needs_bnb = cfg.method.kind == "qlora" or cfg.train.optimizer == "adamw_8bit"
    if needs_bnb and importlib.util.find_spec("bitsandbytes") is None:
        what = "method.kind=qlora" if cfg.method.kind == "qlora" else "train.optimizer=adamw_8bit"
        raise RefusedError(f"{what} needs bitsandbytes, which is not installed: pip install bitsandbytes")
    for tracker in cfg.train.report_to:
        if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
            raise RefusedError(
                f"train.report_to: {tracker} is not installed: pip install {TRACKER_PACKAGES[tracker]}"
            )


def check_device(cfg, cuda: bool) -> None:
    if cfg.model.dtype == "float16" and not cuda:
        raise ConfigError("config error: `model.dtype`: float16 training needs a GPU; use float32 on CPU")


def check_seq_len(seq_len: int, positions: int | None, model_name: str) -> None:
    if positions is not None and seq_len > positions:
        raise RefusedError(
            f"data.seq_len={seq_len} is beyond the {positions} positions of {model_name}; "
            f"set data.seq_len <= {positions}"
        )


def check_prepared(report: dict, fingerprint: str, seq_len: int, data_dir: Path) -> None:
    """The prepared data must have been tokenized by our tokenizer and packed at our seq_len."""
    theirs = (report.get("tokenizer") or {}).get("fingerprint")
    if theirs != fingerprint:
        raise RefusedError(
            f"{data_dir} was prepared with another tokenizer (fingerprint {theirs} != {fingerprint}); "
            "run `codetune prepare` again with this config or delete that directory"
        )
    if report.get("seq_len") not in (None, seq_len):
        raise RefusedError(
            f"{data_dir} was packed at seq_len {report['seq_len']} but data.seq_len is {seq_len}; "
            "run `codetune prepare` again or delete that directory"
        )
