"""Checkpoint directories that are either complete or invisible.

A checkpoint is written into `checkpoints/.partial-step-N/`, finished with `checkpoint.json` (the
completion marker, written last), then renamed to `checkpoints/step-N/` — a rename within one
directory is atomic on POSIX filesystems. `--resume auto` only ever considers `step-N` directories
that hold the marker, so a save interrupted at any point (SIGKILL, full disk, power cut before the
rename) is never chosen. Leftover `.partial-*` directories are removed at the next start.

This protects against the process dying; against the disk losing renamed-but-unflushed data on power
loss it relies on the fsync of the marker and the directory.

Under FSDP a checkpoint holds each rank's shard of the weights (`pytorch_model_fsdp_0/`, accelerate's
torch.distributed.checkpoint layout) next to the config and tokenizer; `gather_sharded` merges the shards
into one HF model directory without any process group (what `codetune export CHECKPOINT --out DIR` does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import ConfigError

MARKER = "checkpoint.json"
SHARDED_MODEL_DIR = "pytorch_model_fsdp_0"  # accelerate's name for FSDP SHARDED_STATE_DICT model weights
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin",
                        MARKER)
PARTIAL_PREFIX = ".partial-"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    eval_loss: float | None
    info: dict


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step-{step}"


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at `path` if it is complete (marker present and readable), else None."""
    path = Path(path)
    try:
        info = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "step" not in info:
        return None
    return Checkpoint(path=path, step=int(info["step"]), eval_loss=info.get("eval_loss"), info=info)


def complete_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every complete `step-N` checkpoint of the run, oldest first."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and _STEP_DIR.match(child.name):
            ckpt = read_checkpoint(child)
            if ckpt is not None:
                found.append(ckpt)
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(run_dir: Path, resume: str | None) -> Checkpoint | None:
    """`auto` -> newest complete checkpoint (None: start fresh); a path -> that checkpoint, which must be
    complete; None -> no resume."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    ckpt = read_checkpoint(Path(resume))
    if ckpt is None:
        raise ConfigError(f"--resume {resume}: not a complete checkpoint ({MARKER} missing)")
    return ckpt


def checkpoints_to_delete(steps: list[int], keep_last: int, best_step: int | None) -> list[int]:
    """Steps to delete so that the newest `keep_last` remain, plus the best one."""
    keep = set(sorted(steps)[-keep_last:]) if keep_last > 0 else set()
    if best_step is not None:
        keep.add(best_step)
    return sorted(s for s in steps if s not in keep)


def best_checkpoint(checkpoints: list[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the lowest eval loss (the earliest on ties); None when none was evaluated."""
    scored = [c for c in checkpoints if c.eval_loss is not None]
    return min(scored, key=lambda c: (c.eval_loss, c.step)) if scored else None


def rotate(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete old complete checkpoints beyond the last `keep_last` and the best by eval loss."""
    found = complete_checkpoints(run_dir)
    best = best_checkpoint(found)
    doomed = set(checkpoints_to_delete([c.step for c in found], keep_last, best.step if best else None))
    removed = []
    for ckpt in found:
        if ckpt.step in doomed:
            # Rename first so that a kill during rmtree leaves no half-deleted step-N behind.
            trash = ckpt.path.with_name(PARTIAL_PREFIX + "deleting-" + ckpt.path.name)
            ckpt.path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(ckpt.path)
    return removed


def remove_partials(run_dir: Path) -> None:
    root = checkpoints_root(run_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(child, ignore_errors=True)


def staging_path(run_dir: Path, step: int) -> Path:
    return checkpoints_root(run_dir) / f"{PARTIAL_PREFIX}{step_dir_name(step)}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """A fresh, empty staging directory for step N's checkpoint."""
    path = staging_path(run_dir, step)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(staging: Path, info: dict) -> Path:
    """Write the marker into a fully written staging directory and rename it to `step-N`."""
    marker = staging / MARKER
    with open(marker, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    final = staging.parent / step_dir_name(int(info["step"]))
    if final.exists():  # an incomplete leftover of the same step (a complete one is never re-saved)
        shutil.rmtree(final)
    staging.rename(final)
    _fsync_dir(staging.parent)
    return final


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARDED_MODEL_DIR).is_dir()


def gather_sharded(src: Path, out: Path) -> Path:
    """One loadable HF model directory from a sharded checkpoint: the shards merged into model.safetensors,
    plus the config/tokenizer files saved beside them (optimizer, RNG and trainer state are left behind)."""
    from accelerate.utils import merge_fsdp_weights

    src, out = Path(src), Path(out)
    staging = out.with_name(f"{PARTIAL_PREFIX}{out.name}")
    shutil.rmtree(staging, ignore_errors=True)
    merge_fsdp_weights(str(src / SHARDED_MODEL_DIR), str(staging), safe_serialization=True)
    for child in src.iterdir():
        training_state = child.name in TRAINING_STATE_FILES or child.name.startswith(("rng_state", "optimizer_"))
        if child.is_file() and not training_state:
            shutil.copy2(child, staging / child.name)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
