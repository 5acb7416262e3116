"""Trainer callbacks: `metrics.jsonl` rows, a rich progress bar, SIGINT/SIGTERM -> checkpoint and stop,
and a checkpoint at every epoch end.

`metrics.jsonl` holds one JSON object per logged step. The Trainer logs the training metrics and the
evaluation of the same step separately; `MetricsWriter` merges them into one row and writes a row
once its step is over (or just before a checkpoint, so every row up to a checkpoint is on disk before
the checkpoint exists). Besides `tokens_per_s` (every row position, padding included) a row holds
`useful_tokens_per_s` (labelled tokens only) and `mfu` against the device's measured peak (`peak_flops`,
see throughput.py) once the trainer has attached its `ThroughputMeter`. On resume, `truncate_metrics`
drops the rows past the checkpoint, which the resumed run is about to write again.

Launched as several processes, only rank 0 writes metrics.jsonl and shows the bar (the logged loss is
already averaged over ranks by the Trainer), and a signal on any rank stops every rank after the same step.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from codetune.report.training import read_metrics


def perplexity(loss: float) -> float:
    """exp(mean token cross-entropy); inf instead of an OverflowError for a diverged model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def rate(amount: float, seconds: float) -> float | None:
    return amount / seconds if seconds > 0 else None


def peak_memory_mb() -> float:
    """Peak CUDA memory allocated by tensors; on CPU the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def truncate_metrics(path: Path, max_step: int) -> int:
    """Keep only rows with step <= max_step (rewritten atomically); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = read_metrics(path)
    kept = [r for r in rows if r["step"] <= max_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)
    return len(rows) - len(kept)


class MetricsWriter(TrainerCallback):
    """Appends one merged row per logged step to metrics.jsonl."""

    def __init__(self, path: Path, write: bool = True):
        self.path = Path(path)
        self.write = write  # False on ranks other than 0: rows are merged in memory, never written
        self.pending: dict | None = None
        self.last_row: dict = {}
        self._mark_time = time.perf_counter()
        self._mark_tokens = 0
        self._mark_useful = 0
        self.throughput = None  # a ThroughputMeter, attached by CodetuneTrainer

    def exclude_time(self, seconds: float) -> None:
        """Leave time not spent training (checkpoint writes) out of tokens_per_s."""
        self._mark_time += seconds

    def flush(self) -> None:
        if self.pending is None:
            return
        if self.write:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.pending) + "\n")
        self.last_row = self.pending
        self.pending = None

    def _row(self, state) -> dict:
        if self.pending is not None and self.pending["step"] != state.global_step:
            self.flush()
        if self.pending is None:
            self.pending = {
                "step": state.global_step,
                "epoch": state.epoch,
                "tokens_seen": state.num_input_tokens_seen,
            }
        return self.pending

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.throughput is not None and model is not None:
            self.throughput.resolve_peak(model)  # before the clock starts: the measurement takes a moment
        self._mark_time = time.perf_counter()
        self._mark_tokens = state.num_input_tokens_seen
        self._mark_useful = self.throughput.total() if self.throughput is not None else 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.pending is not None and self.pending["step"] != state.global_step:
            self.flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            now = time.perf_counter()
            row = self._row(state)
            row.update(
                loss=logs["loss"],
                lr=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_s=rate(state.num_input_tokens_seen - self._mark_tokens, now - self._mark_time),
                peak_memory_mb=round(peak_memory_mb(), 1),
            )
            if self.throughput is not None:
                useful = self.throughput.total()
                useful_rate = rate(useful - self._mark_useful, now - self._mark_time)  # this rank's
                row.update(
                    useful_tokens_per_s=useful_rate * args.world_size if useful_rate is not None else None,
                    mfu=self.throughput.mfu(useful_rate),  # per device: every rank does the same work
                    peak_flops=self.throughput.peak_flops or None,
                )
                self._mark_useful = useful
            self._mark_time, self._mark_tokens = now, state.num_input_tokens_seen
        elif "eval_loss" in logs:
            row = self._row(state)
            row.update(eval_loss=logs["eval_loss"], perplexity=perplexity(logs["eval_loss"]))
            self.exclude_time(float(logs.get("eval_runtime", 0.0)))

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()


class RichProgress(TrainerCallback):
    """A rich progress bar over optimizer steps with the latest loss, eval loss and throughput."""

    def __init__(self):
        self.progress = None
        self.task = None
        self.status = ""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, status=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, status=self.status)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.status = f"loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}"
        if "eval_loss" in logs:
            self.status += f"  eval {logs['eval_loss']:.4f}"
        if self.progress is not None:
            self.progress.update(self.task, status=self.status)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Stop the live display (also after an exception, which skips on_train_end)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class SaveAtEpochEnd(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = True


class StopOnSignal(TrainerCallback):
    """After SIGINT/SIGTERM, finish the current optimizer step, save a checkpoint and stop.

    A second signal while stopping falls through to the default behaviour (exit at once). Under several
    processes all ranks must stop after the same step (one stopping alone would leave the others waiting in
    their next all-reduce): a one-element all-reduce per step tells every rank whether any rank got a signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None  # the signal this process got
        self.stopped = False  # this or another rank got one
        self.step: int | None = None

    def _handle(self, signum, frame):
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received = signum

    @contextmanager
    def installed(self):
        try:
            previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: signals cannot be caught here
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def any_rank_received(self, args) -> bool:
        local = self.received is not None
        if getattr(args, "world_size", 1) <= 1:
            return local
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(local)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self.any_rank_received(args):
            self.stopped = True
            self.step = state.global_step
            control.should_save = True
            control.should_training_stop = True

    @property
    def signal_name(self) -> str:
        if self.received:
            return signal.Signals(self.received).name
        return "a signal to another rank" if self.stopped else ""
