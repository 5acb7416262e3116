"""`codetune export RUN_DIR [--merge] [--out DIR] [--push-to-hub REPO]`: hand a trained model on.

`--merge` folds a LoRA/QLoRA adapter into the base weights (loaded unquantized, in the dtype they were
saved in) so the result loads with plain transformers and serves without peft. `--push-to-hub` uploads
the directory with huggingface_hub; any failure (offline, not logged in, no permission) is one line.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError, ConfigError
from codetune.train import checkpoints


@dataclass
class ExportResult:
    source: Path
    out: Path
    merged: bool
    pushed_to: str | None

    def summary(self) -> str:
        text = f"{'merged' if self.merged else 'exported'} {self.source} -> {self.out}"
        if self.pushed_to:
            text += f"; pushed to https://huggingface.co/{self.pushed_to}"
        return text


def find_model_dir(path: Path) -> Path:
    """A run directory's `final/`, or `path` itself when it is a model, adapter or checkpoint directory."""
    path = Path(path)
    for candidate in (path / "final", path):
        if (candidate / "adapter_config.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise CodetuneError(
        f"no model or adapter under {path} (expected final/ with config.json or adapter_config.json)"
    )


def _run_config(model_dir: Path):
    """The config of the run the model came from (for the model card), when it can be found."""
    from codetune.config import load_config

    for candidate in (
        model_dir / "config.yaml",
        model_dir.parent / "config.yaml",
        model_dir.parent.parent / "config.yaml",
    ):
        if candidate.is_file():
            try:
                return load_config(candidate)
            except CodetuneError:
                return None
    return None


def merge_adapter(src: Path, out: Path) -> Path:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(src), dtype="auto")
    except Exception as exc:  # the base model may be a hub name we cannot reach
        raise CodetuneError(
            f"cannot load the adapter at {src} with its base model: "
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    merged = model.merge_and_unload()
    staging = out.with_name(f".partial-{out.name}")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(str(staging))
    if (src / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(staging))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def hub_error(repo: str, exc: Exception) -> CodetuneError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    name = exc.__class__.__name__
    if isinstance(exc, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set; unset it on a machine with network access"
    elif isinstance(exc, HfHubHTTPError) and getattr(exc.response, "status_code", None) in (401, 403):
        why = "not authorized: run `hf auth login` or set HF_TOKEN with write access"
    elif "connect" in name.lower() or "timeout" in name.lower() or "resolve" in str(exc).lower():
        why = "the Hugging Face Hub is unreachable (offline?)"
    else:
        why = f"{name}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return CodetuneError(f"cannot push to {repo}: {why}")


def push(folder: Path, repo: str) -> None:
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload with codetune")
    except Exception as exc:
        raise hub_error(repo, exc) from None


def export(
    run_dir: Path, out: Path | None = None, merge: bool = False, push_to_hub: str | None = None
) -> ExportResult:
    run_dir = Path(run_dir)
    src = find_model_dir(run_dir)
    is_adapter = (src / "adapter_config.json").is_file()
    if merge and not is_adapter:
        raise ConfigError(f"--merge: {src} holds a full model, not a LoRA adapter; export it without --merge")
    if out is None and not merge and push_to_hub is None:
        raise ConfigError("nothing to do: give --out DIR, --merge or --push-to-hub REPO")
    target = Path(out) if out is not None else (run_dir / "merged" if merge else src)
    if merge:
        merge_adapter(src, target)
        cfg = _run_config(src)
        if cfg is not None:
            from codetune.report.training import read_metrics
            from codetune.train.model_card import write_model_card

            rows = read_metrics(src.parent / "metrics.jsonl")
            write_model_card(target, cfg, rows, cfg.method.kind, rows[-1]["step"] if rows else 0, merged=True)
    elif checkpoints.is_sharded(src):  # FSDP shards -> one HF model
        if target.resolve() == src.resolve():
            raise ConfigError(f"{src} is a sharded checkpoint: give --out DIR to gather it into one model")
        checkpoints.gather_sharded(src, target)
    elif target.resolve() != src.resolve():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
    if push_to_hub:
        push(target, push_to_hub)
    return ExportResult(source=src, out=target, merged=merge, pushed_to=push_to_hub)
