"""The transformers Trainer, with the three things it lacks for runs that must never be lost:

- atomic checkpoints (`checkpoints.py`): written aside, marked complete, renamed; rotation keeps the
  last K plus the best by eval loss;
- bitwise-exact resume of the *logged* values: the Trainer averages the loss over the steps since the
  last log, and that running sum is not part of its checkpoint, so a resume between two logging steps
  would log a different loss. We store the accumulator in the checkpoint marker and restore it;
- a non-finite loss stops the run at once, naming the step, before anything is saved.

Under several processes every rank writes its part of a checkpoint (its RNG state; under FSDP its shard of
the weights and optimizer, plus config and tokenizer so a gathered export is a loadable model) into the same
staging directory between two barriers; rank 0 alone writes the trainer state and the marker and renames.
The loss accumulator differs per rank, so the marker keeps one per rank.

And what makes it fast (see bench/train_throughput.py for the measured gain of each):
- every forward runs with `use_cache=False`. transformers builds the block-diagonal causal mask of packed
  rows from `position_ids` only when there is no KV cache; with the config's default `use_cache=True` a
  cache is created even in training and documents silently attend across their boundaries;
- the loss goes through `fused_loss.fused_cross_entropy` (chunked, never the whole batch's logits) where
  the model's output head allows it;
- useful (labelled) tokens are counted for `useful_tokens_per_s` and MFU in metrics.jsonl.

`training_arguments` maps our config onto `TrainingArguments`; the names of the small mapping
decisions (optimizer, scheduler, warmup) are pure functions tested on their own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from codetune.train import checkpoints
from codetune.train.throughput import ThroughputMeter

TRAINER_STATE = "trainer_state.json"


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss is {value} at step {step}")
        self.step = step
        self.value = value


def optimizer_name(kind: str, fused_available: bool = True) -> str:
    """Our optimizer names -> transformers' `optim`. Fused AdamW runs on CUDA and (torch >= 2.4) on CPU."""
    if kind == "adamw":
        return "adamw_torch_fused" if fused_available else "adamw_torch"
    if kind == "adafactor":
        return "adafactor"
    if kind == "adamw_8bit":
        return "adamw_bnb_8bit"
    raise ValueError(f"unknown optimizer {kind!r}")


def scheduler_name(kind: str) -> str:
    # transformers' plain "constant" ignores warmup; ours warms up like the others.
    return {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[kind]


def warmup_setting(warmup_steps: int, warmup_ratio: float) -> int | float:
    """transformers reads warmup_steps >= 1 as steps and < 1 as a fraction of all steps."""
    return warmup_steps if warmup_steps > 0 else warmup_ratio


def training_arguments(
    cfg, run_dir: Path, micro_batch: int, gradient_checkpointing: bool, dtype, has_eval: bool, cuda: bool
):
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    fused = cuda or tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)
    return TrainingArguments(
        output_dir=str(run_dir),  # trackers (TensorBoard's runs/) write here; checkpoints are ours
        per_device_train_batch_size=micro_batch,
        per_device_eval_batch_size=micro_batch,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        max_steps=t.max_steps or -1,
        num_train_epochs=t.epochs,
        lr_scheduler_type=scheduler_name(t.scheduler),
        warmup_steps=warmup_setting(t.warmup_steps, t.warmup_ratio),
        optim=optimizer_name(t.optimizer, fused),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        torch_compile=t.torch_compile,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(t.eval_steps or t.save_steps) if has_eval else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        seed=t.seed,
        data_seed=t.seed,
        report_to=list(t.report_to) or "none",
        disable_tqdm=True,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not cuda,
        include_num_input_tokens_seen="all",
        logging_nan_inf_filter=False,
        prediction_loss_only=True,
        dataloader_num_workers=t.dataloader_workers,
        # Causal LMs use every parameter (LoRA's frozen ones need no gradient): the default search for unused
        # ones costs an extra autograd traversal per step under DDP.
        ddp_find_unused_parameters=False,
    )


def collate(features: list[dict]) -> dict:
    """Stack fixed-length packed rows; int64 because cross-entropy wants long labels."""
    import numpy as np
    import torch

    keys = [k for k in ("input_ids", "labels", "position_ids") if k in features[0]]
    return {k: torch.as_tensor(np.asarray([f[k] for f in features]), dtype=torch.long) for k in keys}


class _RestoreLogAccumulators(TrainerCallback):
    """Puts back the loss running sum of the checkpoint we resume from (see module docstring)."""

    def __init__(self, trainer: CodetuneTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        info = self.trainer.resume_info
        if info and "tr_loss" in info:
            by_rank = info.get("tr_loss_by_rank") or []
            mine = by_rank[args.process_index] if len(by_rank) == args.world_size else info["tr_loss"]
            self.trainer._tr_loss.fill_(float(mine))
            self.trainer._globalstep_last_logged = int(info["last_logged_step"])
            self.trainer._total_loss_scalar = float(info["total_loss_scalar"])


class CodetuneTrainer(Trainer):
    def __init__(
        self,
        *args,
        run_dir: Path,
        keep_last: int,
        metrics=None,
        resume_info: dict | None = None,
        fused_loss: bool = True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.metrics = metrics
        self.resume_info = resume_info
        self.last_checkpoint: Path | None = None
        # a compiled graph would recompile around the swapped head on every call; compile fuses the loss itself
        self.fused_loss = fused_loss and not self.args.torch_compile
        self.throughput = ThroughputMeter()
        if metrics is not None:
            metrics.throughput = self.throughput
        self.add_callback(_RestoreLogAccumulators(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "use_cache": False}
        if not self.fused_loss or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from codetune.train.fused_loss import fused_cross_entropy

        with fused_cross_entropy(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        import torch

        if "labels" in inputs:
            self.throughput.count(inputs["labels"])
            self.throughput.resolve(model, inputs["labels"].shape[-1])
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(self.state.global_step + 1, loss.item())
        return loss

    def _eval_loss_at(self, step: int) -> float | None:
        for entry in reversed(self.state.log_history):
            if entry.get("step") == step and "eval_loss" in entry:
                return float(entry["eval_loss"])
        return None

    def _save_checkpoint(self, model, trial) -> None:
        step = self.state.global_step
        root = checkpoints.checkpoints_root(self.run_dir)
        existing = checkpoints.read_checkpoint(root / checkpoints.step_dir_name(step))
        if existing is not None:  # e.g. the epoch-end save right after the step save of the same step
            self.last_checkpoint = existing.path
            return
        started = time.perf_counter()
        main = self.is_world_process_zero()
        if self.metrics is not None:
            self.metrics.flush()  # every row up to this step is on disk before the checkpoint exists
        self.store_flos()
        staging = checkpoints.staging_path(self.run_dir, step)
        if main:
            checkpoints.staging_dir(self.run_dir, step)  # fresh and empty
        self.accelerator.wait_for_everyone()  # ... before any rank writes into it
        self.save_model(str(staging), _internal_call=True)
        if self.is_fsdp_enabled and main and not (staging / "config.json").is_file():
            self.model.config.save_pretrained(str(staging))  # sharded weights: what a gathered export needs
            if self.processing_class is not None:
                self.processing_class.save_pretrained(str(staging))
        self._save_optimizer_and_scheduler(str(staging))
        self._save_scaler(str(staging))
        self._save_rng_state(str(staging))
        tr_loss_by_rank = self.accelerator.gather(self._tr_loss.detach().reshape(1)).tolist()
        self.accelerator.wait_for_everyone()  # every rank's part is on disk

        eval_loss = self._eval_loss_at(step)
        if eval_loss is not None and (self.state.best_metric is None or eval_loss < self.state.best_metric):
            self.state.best_metric = eval_loss
            self.state.best_global_step = step
            self.state.best_model_checkpoint = str(root / checkpoints.step_dir_name(step))
        for cb in [
            c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)
        ]:
            name = cb.__class__.__name__
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(cb.state())
            else:
                self.state.stateful_callbacks[name] = cb.state()
        if main:
            self.state.save_to_json(str(staging / TRAINER_STATE))
            info = {
                "step": step,
                "epoch": self.state.epoch,
                "eval_loss": eval_loss,
                "tr_loss": float(self._tr_loss.item()),
                "tr_loss_by_rank": tr_loss_by_rank,
                "last_logged_step": self._globalstep_last_logged,
                "total_loss_scalar": self._total_loss_scalar,
                "world_size": self.args.world_size,
                "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            checkpoints.commit(staging, info)
            checkpoints.rotate(self.run_dir, self.keep_last)
        self.accelerator.wait_for_everyone()  # committed before any rank goes on (or reads it back)
        self.last_checkpoint = root / checkpoints.step_dir_name(step)
        if self.metrics is not None:
            self.metrics.exclude_time(time.perf_counter() - started)
