"""Optimizers, schedulers with warmup (hand-worked learning rates per step), epochs with a checkpoint at
each epoch end, gradient checkpointing, and the small pure mapping functions."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerCallback

from codetune.train.checkpoints import Checkpoint, best_checkpoint, checkpoints_to_delete
from codetune.train.checks import first_difference
from codetune.train.trainer import optimizer_name, scheduler_name, warmup_setting


class Capture(TrainerCallback):
    def __init__(self):
        self.seen = {}

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)
        bits = getattr(getattr(inner, "args", None), "optim_bits", "")
        self.seen["fused"] = getattr(inner, "defaults", {}).get("fused")
        self.seen.update(
            optimizer=f"{type(inner).__module__.split('.')[0]}.{type(inner).__name__}{bits}",
            checkpointing=model.is_gradient_checkpointing,
            max_steps=state.max_steps,
        )


def _lrs(run_dir):
    from codetune.report.training import read_metrics

    return [r["lr"] for r in read_metrics(run_dir / "metrics.jsonl") if "lr" in r]


def test_adafactor_linear_warmup_ratio_with_gradient_checkpointing(make_cfg):
    from codetune.train.run import run

    cap = Capture()
    cfg = make_cfg(
        "train.optimizer=adafactor",
        "train.scheduler=linear",
        "train.warmup_steps=0",
        "train.warmup_ratio=0.25",
        "train.max_steps=8",
        "train.save_steps=100",
        "train.gradient_checkpointing=true",
        "train.weight_decay=0.1",
    )
    run(cfg, extra_callbacks=[cap])
    assert cap.seen["optimizer"] == "transformers.Adafactor" and cap.seen["checkpointing"] is True
    # warmup ceil(8 * 0.25) = 2 steps from 0, then linear to 0 at step 8: lr(s) = 1e-3 * (8 - s) / 6
    want = [0.0, 0.5e-3] + [1e-3 * (8 - s) / 6 for s in range(2, 8)]
    assert _lrs(cfg.run_dir) == pytest.approx(want, abs=1e-12)


def test_adamw_8bit_constant_schedule_over_two_epochs(make_cfg, prepared_data):
    pytest.importorskip("bitsandbytes")
    from datasets import load_from_disk

    from codetune.train import checkpoints
    from codetune.train.run import run

    cap = Capture()
    cfg = make_cfg(
        "train.optimizer=adamw_8bit",
        "train.scheduler=constant",
        "train.warmup_steps=2",
        "train.max_steps=null",
        "train.epochs=2",
        "train.micro_batch=8",
        "train.save_steps=100",
        "train.eval_steps=100",
    )
    result = run(cfg, extra_callbacks=[cap])
    per_epoch = math.ceil(len(load_from_disk(str(prepared_data / "train"))) / 8)
    assert cap.seen["optimizer"] == "bitsandbytes.AdamW8" and cap.seen["max_steps"] == 2 * per_epoch
    assert result.steps == 2 * per_epoch
    lrs = _lrs(cfg.run_dir)
    assert lrs[:3] == [0.0, 0.5e-3, 1e-3] and set(lrs[2:]) == {1e-3}
    # no step checkpoint falls in this run: these are the two epoch-end checkpoints
    assert [c.step for c in checkpoints.complete_checkpoints(cfg.run_dir)] == [per_epoch, 2 * per_epoch]


def test_cosine_schedule_from_warmup_steps(make_cfg):
    from codetune.train.run import run

    cap = Capture()
    cfg = make_cfg("train.warmup_steps=2", "train.max_steps=6", "train.save_steps=100")
    run(cfg, extra_callbacks=[cap])
    assert cap.seen["optimizer"] == "torch.AdamW" and cap.seen["fused"] is True
    # cosine after 2 warmup steps: lr(s) = 1e-3 * 0.5 * (1 + cos(pi * (s - 2) / 4))
    want = [0.0, 0.5e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 4)) for s in range(2, 6)]
    assert _lrs(cfg.run_dir) == pytest.approx(want, abs=1e-12)


def test_mapping_functions():
    assert optimizer_name("adamw") == "adamw_torch_fused"
    assert optimizer_name("adamw", fused_available=False) == "adamw_torch"
    assert optimizer_name("adafactor") == "adafactor"
    assert optimizer_name("adamw_8bit") == "adamw_bnb_8bit"
    assert scheduler_name("constant") == "constant_with_warmup"
    assert warmup_setting(10, 0.5) == 10
    assert warmup_setting(0, 0.1) == 0.1


def test_training_arguments_carry_the_config(make_cfg):
    import torch

    from codetune.train.trainer import training_arguments

    cfg = make_cfg(
        "train.grad_accum=4",
        "train.weight_decay=0.05",
        "train.max_grad_norm=0.5",
        "train.seed=7",
        "train.eval_steps=null",
        "train.save_steps=20",
        data=False,
    )
    args = training_arguments(cfg, cfg.run_dir, 3, False, torch.float32, has_eval=True, cuda=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (3, 4)
    assert (args.weight_decay, args.max_grad_norm, args.seed, args.data_seed) == (0.05, 0.5, 7, 7)
    assert args.eval_steps == 20 and args.save_steps == 20  # eval follows save_steps by default
    assert not args.bf16 and not args.fp16
    assert training_arguments(cfg, cfg.run_dir, 3, False, torch.bfloat16, True, cuda=False).bf16


def test_resolve_memory_plan_on_cpu(make_cfg):
    from codetune.train.run import CPU_MICRO_BATCH, resolve_memory_plan

    assert resolve_memory_plan(make_cfg("train.micro_batch=auto", data=False), None, force=False) == (
        CPU_MICRO_BATCH,
        False,
    )
    assert resolve_memory_plan(make_cfg("train.gradient_checkpointing=true", data=False), None, False) == (
        2,
        True,
    )


def test_resolve_memory_plan_on_a_gpu_uses_the_planner(make_cfg):
    """The real planner on the tiny model: a 16 GiB GPU fits and `auto` takes its answer; a GPU too small
    for one sequence is refused with the planner's advice, unless --force."""
    from codetune.errors import RefusedError
    from codetune.plan.gpus import GPU
    from codetune.train.run import resolve_memory_plan

    roomy = GPU("local", "test GPU", 16.0, 100.0, True)
    cfg = make_cfg("train.micro_batch=auto", "train.gradient_checkpointing=auto", data=False)
    micro, gc = resolve_memory_plan(cfg, roomy, force=False)
    assert micro >= 8 and gc is False
    tiny = GPU("local", "test GPU", 0.0001, 100.0, True)
    with pytest.raises(RefusedError, match=r"the plan predicts out-of-memory on test GPU .*--force"):
        resolve_memory_plan(make_cfg(data=False), tiny, force=False)
    assert resolve_memory_plan(make_cfg(data=False), tiny, force=True) == (2, True)  # recompute: auto -> on


def test_checkpoints_to_delete_keeps_last_k_and_best():
    assert checkpoints_to_delete([3, 6, 9, 12], keep_last=2, best_step=3) == [6]
    assert checkpoints_to_delete([3, 6, 9, 12], keep_last=2, best_step=12) == [3, 6]
    assert checkpoints_to_delete([3, 6], keep_last=3, best_step=None) == []
    ckpts = [
        Checkpoint(path=None, step=s, eval_loss=e, info={})
        for s, e in [(3, 2.0), (6, None), (9, 1.5), (12, 1.5)]
    ]
    assert best_checkpoint(ckpts).step == 9
    assert best_checkpoint(ckpts[1:2]) is None


def test_first_difference_names_the_dotted_key():
    assert first_difference({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == "b.c"
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == "z"
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}) is None


def test_metrics_helpers(tmp_path):
    from codetune.train.callbacks import perplexity, rate, truncate_metrics

    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(1e6) == math.inf
    assert rate(1000, 4.0) == 250.0 and rate(1000, 0.0) is None
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 8)) + '{"step": 8, "lo')
    assert truncate_metrics(path, 5) == 2  # rows 6, 7 dropped; the torn line never counted
    assert path.read_text().count("\n") == 5
