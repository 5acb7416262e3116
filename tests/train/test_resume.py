"""Exact resume: a run that dies (or is stopped by SIGTERM) and is resumed with `--resume auto` logs the
same loss, learning rate, grad norm and eval loss at every later step and ends with bitwise-equal
weights, as a run that was never interrupted. Also: an interrupted checkpoint save is never chosen,
and a NaN loss stops the run naming the step with the last good checkpoint kept.

The schedule is chosen to hit the hard cases: LoRA dropout (RNG state), gradient accumulation, an epoch
boundary (step 8 of 11: data order of the second epoch), a checkpoint between two logging steps (the
loss running sum), and an evaluation that is not at a checkpoint step.
"""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from tests.train.conftest import build_cfg

OVERRIDES = (
    "method.kind=lora",
    "method.r=4",
    "method.dropout=0.1",
    "train.learning_rate=3e-3",
    "train.grad_accum=4",
    "train.max_steps=11",
    "train.save_steps=3",
    "train.logging_steps=2",
    "train.eval_steps=4",
    "train.save_total_limit=2",
)
COMPARED = ("step", "epoch", "loss", "lr", "grad_norm", "eval_loss", "perplexity", "tokens_seen")


class Die(Exception):
    """Stands in for SIGKILL inside the test process: nothing after this point is saved."""


class DieAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Die(f"killed after step {self.step}")


class SignalAt(TrainerCallback):
    def __init__(self, step: int, signum=signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


def comparable(run_dir):
    from codetune.report.training import read_metrics

    return [{k: r.get(k) for k in COMPARED} for r in read_metrics(run_dir / "metrics.jsonl")]


def weights(final_dir):
    from safetensors.torch import load_file

    return load_file(str(final_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, prepared_data):
    from codetune.train.run import run

    cfg = build_cfg(tmp_path_factory.mktemp("ref") / "run", tiny_model_dir, prepared_data, *OVERRIDES)
    result = run(cfg)
    return comparable(cfg.run_dir), weights(result.final_dir)


def test_killed_and_sigtermed_run_resumes_bitwise_identically(reference, make_cfg):
    from codetune.errors import CodetuneError
    from codetune.train import checkpoints
    from codetune.train.run import run

    ref_rows, ref_weights = reference
    assert ref_rows[-1]["step"] == 11 and any(r["eval_loss"] for r in ref_rows)
    assert ref_rows[-1]["epoch"] > 1  # the run crosses an epoch boundary
    cfg = make_cfg(*OVERRIDES)

    with pytest.raises(Die):
        run(cfg, extra_callbacks=[DieAt(7)])
    assert checkpoints.latest_checkpoint(cfg.run_dir).step == 6
    died = comparable(cfg.run_dir)
    assert died == ref_rows[: len(died)] and died[-1]["step"] == 6  # step 7's row died with the process

    with pytest.raises(CodetuneError, match=r"stopped by SIGTERM after step 10; .*--resume auto"):
        run(cfg, resume="auto", extra_callbacks=[SignalAt(10)])
    assert checkpoints.latest_checkpoint(cfg.run_dir).step == 10  # saved on the way out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored

    result = run(cfg, resume="auto")
    assert result.resumed_from.name == "step-10"
    assert comparable(cfg.run_dir) == ref_rows
    got = weights(result.final_dir)
    assert got.keys() == ref_weights.keys()
    assert all((got[k] == ref_weights[k]).all() for k in got)
    # keep the last 2 plus the best by eval loss
    kept = [c.step for c in checkpoints.complete_checkpoints(cfg.run_dir)]
    assert kept[-2:] == [10, 11] and len(kept) <= 3


def test_interrupted_save_is_never_resumed_from(reference, make_cfg, monkeypatch):
    from codetune.train import checkpoints
    from codetune.train.run import run
    from codetune.train.trainer import CodetuneTrainer

    cfg = make_cfg(*OVERRIDES)
    original = CodetuneTrainer._save_rng_state

    def dies_on_second_save(self, output_dir):
        if self.state.global_step == 6:
            raise Die("killed while writing checkpoint 6")
        return original(self, output_dir)

    monkeypatch.setattr(CodetuneTrainer, "_save_rng_state", dies_on_second_save)
    with pytest.raises(Die):
        run(cfg)
    monkeypatch.undo()
    root = checkpoints.checkpoints_root(cfg.run_dir)
    assert (root / ".partial-step-6" / "adapter_model.safetensors").is_file()  # half written
    # a step directory without its completion marker, as if renamed by hand or by another tool
    (root / "step-9").mkdir()
    (root / "step-9" / "trainer_state.json").write_text("{}")
    assert checkpoints.resolve_resume(cfg.run_dir, "auto").step == 3

    result = run(cfg, resume="auto")
    assert result.resumed_from.name == "step-3"
    assert not (root / ".partial-step-6").exists()
    assert comparable(cfg.run_dir) == reference[0]


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(make_cfg):
    import torch

    from codetune.errors import CodetuneError
    from codetune.train import checkpoints
    from codetune.train.run import run

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 4:
                with torch.no_grad():
                    model.get_input_embeddings().weight.fill_(float("nan"))

    cfg = make_cfg("train.max_steps=8")
    with pytest.raises(CodetuneError, match=r"loss is nan at step 5; last good checkpoint: .*step-3"):
        run(cfg, extra_callbacks=[Poison()])
    assert [c.step for c in checkpoints.complete_checkpoints(cfg.run_dir)] == [3]
    assert not (cfg.run_dir / "final").exists()


def test_sigint_is_caught_while_installed_and_restored_after():
    from transformers import TrainerControl

    from codetune.train.callbacks import StopOnSignal

    stopper = StopOnSignal()
    before = signal.getsignal(signal.SIGINT)
    with stopper.installed():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without the handler
        control = TrainerControl()
        stopper.on_step_end(None, type("S", (), {"global_step": 7})(), control)
    assert stopper.signal_name == "SIGINT" and stopper.step == 7
    assert control.should_save and control.should_training_stop
    assert signal.getsignal(signal.SIGINT) is before
