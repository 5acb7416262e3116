"""`train.eval_tasks`: evaluate named tasks (pass@k, SQL, perplexity, ...) on a small fixed budget each time
the Trainer evaluates (every `eval_steps`, by default every checkpoint), with the metrics merged into that
step's metrics.jsonl row and the samples under `eval/during-training/step-N/`.

The evaluation must not change training: it runs on a copy of every RNG state (sampling would otherwise
consume the stream dropout uses, and a resumed run would diverge), and its time is left out of
tokens_per_s.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback


@contextmanager
def preserved_rng():
    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


class TaskEval(TrainerCallback):
    def __init__(self, cfg, tokenizer, metrics_writer):
        self.cfg, self.tokenizer, self.metrics = cfg, tokenizer, metrics_writer

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        from codetune.evaluate.run import evaluate_checkpoint

        if not state.is_world_process_zero or model is None:
            return
        started = time.perf_counter()
        with preserved_rng():
            flat = evaluate_checkpoint(
                model, self.tokenizer, self.cfg.train.eval_tasks, limit=self.cfg.train.eval_limit,
                eval_cfg=self.cfg.eval, run_dir=self.cfg.run_dir,
                output_dir=Path(self.cfg.run_dir) / "eval" / "during-training" / f"step-{state.global_step}",
            )
        self.metrics._row(state).update(flat)
        self.metrics.exclude_time(time.perf_counter() - started)
