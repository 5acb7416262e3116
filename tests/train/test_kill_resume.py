"""The promise of `codetune train`, tested the way a user meets it (through the CLI, in a subprocess):
a 40-step run is killed with SIGKILL at a random moment after its first checkpoint (mid-step,
mid-evaluation or mid-save), resumed with `--resume auto`, and its metrics.jsonl and final weights
match an uninterrupted run exactly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import yaml

from tests.train.conftest import build_cfg
from tests.train.test_resume import comparable

STEPS = 40
SAVE_STEPS = 5


def _write_config(cfg, path):
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    return path


def _train(config_path, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen(
        [sys.executable, "-m", "codetune", "train", str(config_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _rows_logged(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def test_sigkill_at_random_moment_then_resume_auto_matches_uninterrupted(
    tmp_path, tiny_model_dir, stdlib_dir
):
    from safetensors.torch import load_file

    # No prepared data: each run prepares its own from the stdlib `json` package (deterministically).
    overrides = (
        f"data.sources=[{{path: '{stdlib_dir / 'json'}'}}]",
        "data.valid_fraction=0.2",
        "data.num_proc=1",
        f"train.max_steps={STEPS}",
        f"train.save_steps={SAVE_STEPS}",
        "train.eval_steps=10",
        "train.logging_steps=1",
        "train.learning_rate=1e-3",
    )
    ref = build_cfg(tmp_path / "ref", tiny_model_dir, None, *overrides)
    victim = build_cfg(tmp_path / "victim", tiny_model_dir, None, *overrides)
    seed = int.from_bytes(os.urandom(4), "little")
    kill_after_rows = random.Random(seed).randint(SAVE_STEPS + 1, STEPS - 4)

    from codetune.train.run import run

    run(ref)  # in-process (same single thread as the subprocesses): saves one interpreter start-up
    victim_proc = _train(_write_config(victim, tmp_path / "victim.yaml"))
    deadline = time.monotonic() + 300
    while victim_proc.poll() is None and time.monotonic() < deadline:
        checkpointed = any((victim.run_dir / "checkpoints").glob("step-*/checkpoint.json"))
        if checkpointed and _rows_logged(victim.run_dir) >= kill_after_rows:
            break
        time.sleep(0.005)
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.communicate()
    assert victim_proc.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed})"
    assert not (victim.run_dir / "final").exists()

    resumed = _train(tmp_path / "victim.yaml", "--resume", "auto")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "resumed from step-" in out

    assert (victim.run_dir / "data" / "prepare_report.json").is_file()
    got, want = comparable(victim.run_dir), comparable(ref.run_dir)
    assert [r["step"] for r in want] == list(range(1, STEPS + 1))
    assert got == want, f"kill after {kill_after_rows} rows (seed {seed})"
    a = load_file(str(victim.run_dir / "final" / "model.safetensors"))
    b = load_file(str(ref.run_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
