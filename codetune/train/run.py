"""`codetune train CONFIG [--resume auto|PATH] [--force]`: fine-tune full, LoRA or QLoRA on the prepared
dataset with exact resume, atomic checkpoints, metrics.jsonl, plots and a loadable final model.

Order of work: every refusal (checks.py) -> config.yaml -> prepare the data if it is missing -> load
the model -> Trainer -> `final/` (model or adapter + tokenizer + model card) -> report.

Launched as N processes (`--num-processes N`, see launch.py) every rank runs this same function: all ranks
make the refusals, rank 0 alone writes config.yaml, prepares the data (the others wait for it), writes
metrics.jsonl, final/, the model card and the report; all ranks take part in each checkpoint and in saving
final/ (under FSDP the full state dict is gathered into one HF model).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError, DataError, RefusedError
from codetune.train import checkpoints, checks

CPU_MICRO_BATCH = 4  # `train.micro_batch: auto` without a GPU: small enough for any model that fits in RAM
TRAINING_ARTIFACTS = ("checkpoints", "final", "metrics.jsonl")  # report/ is shared with evaluate


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path
    steps: int
    resumed_from: Path | None
    last_loss: float | None
    eval_loss: float | None
    tokens_seen: int
    wall_s: float
    report_html: Path | None

    def summary(self) -> str:
        parts = [f"trained to step {self.steps} in {self.wall_s:.0f} s"]
        if self.resumed_from is not None:
            parts[0] += f" (resumed from {self.resumed_from.name})"
        if self.last_loss is not None:
            parts.append(f"loss {self.last_loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval loss {self.eval_loss:.4f}")
        parts.append(f"model: {self.final_dir}")
        if self.report_html is not None:
            parts.append(f"report: {self.report_html}")
        return "; ".join(parts)


def has_training_artifacts(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in TRAINING_ARTIFACTS)


def clear_training_artifacts(run_dir: Path) -> None:
    for name in TRAINING_ARTIFACTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def local_gpu():
    """The plan's description of the GPU we run on (memory is what the verdict needs)."""
    import torch

    from codetune.plan.gpus import GPU, GPUS

    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    known = next((g for g in GPUS.values() if g.name.replace("-", " ").split()[0] in name.lower()), None)
    return GPU(
        "local",
        name,
        props.total_memory / 2**30,
        known.peak_tflops if known else 100.0,
        torch.cuda.is_bf16_supported(),
    )


def resolve_memory_plan(cfg, gpu, force: bool) -> tuple[int, bool]:
    """(micro_batch, gradient_checkpointing). On a GPU the planner decides `auto` and refuses a config it
    predicts to run out of memory (unless --force); on CPU (`gpu` None) `auto` is a small batch without
    recomputation, which only saves memory there at the cost of time."""
    micro, gc = cfg.train.micro_batch, cfg.train.gradient_checkpointing
    if gpu is not None:
        from codetune.plan.run import plan_for_config

        plan = plan_for_config(cfg, device_override=gpu)
        if not plan.fits and not force:
            hint = plan.suggestions[0] if plan.suggestions else "lower train.micro_batch or data.seq_len"
            raise RefusedError(
                f"the plan predicts out-of-memory on {gpu.label} ({plan.peak_gb:.1f} GiB needed, "
                f"{gpu.memory_gib:.1f} GiB there): {hint}; or pass --force to try anyway"
            )
        if micro == "auto":
            micro = max(1, plan.recommended_micro_batch)
        if gc == "auto":
            gc = plan.gradient_checkpointing
    return (CPU_MICRO_BATCH if micro == "auto" else int(micro)), (False if gc == "auto" else bool(gc))


def load_data(cfg, fingerprint: str):
    """(train, valid or None) datasets; runs `codetune prepare` first when the data is missing."""
    from codetune.data.prepared import load_prepared

    data_dir = cfg.run_dir / "data"
    if not (data_dir / "prepare_report.json").is_file():
        from codetune.data.run import run as prepare

        prepare(cfg)
    train_ds, valid_ds, report = load_prepared(cfg.run_dir)
    checks.check_prepared(report, fingerprint, cfg.data.seq_len, data_dir)
    if len(train_ds) == 0:
        raise DataError(f"{data_dir / 'train'} holds no sequences")
    return train_ds, (valid_ds if len(valid_ds) > 0 else None)


def data_is_stale(report: dict, cfg, fingerprint: str) -> bool:
    """The prepared data came from other data settings than this config's (prepare's config_hash)."""
    from codetune.data.prepared import data_config_hash

    theirs = report.get("config_hash")
    return theirs is not None and theirs != data_config_hash(cfg.data, fingerprint)


def load_model_for_training(cfg, tokenizer, gradient_checkpointing: bool, cuda: bool):
    """The base model in the right dtype (fp32 master weights for full fine-tuning, which then trains under
    bf16/fp16 autocast; the compute dtype for a LoRA base; 4-bit for QLoRA), embeddings grown for added
    tokens, and the method applied."""
    from codetune.modeling import (
        apply_method,
        load_model,
        quantization_config,
        resize_for_tokenizer,
        resolve_dtype,
    )

    dtype = resolve_dtype(cfg.model.dtype)
    if cfg.method.kind == "full":
        model = load_model(cfg.model.model_copy(update={"dtype": "float32"}))
    elif cfg.method.kind == "lora":
        model = load_model(cfg.model)
    else:
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))} if cuda else None  # this rank's GPU
        model = load_model(
            cfg.model, quantization_config=quantization_config(cfg.method, dtype), device_map=device_map
        )
    new_ids = resize_for_tokenizer(model, tokenizer)
    if gradient_checkpointing:
        model.config.use_cache = False
    model = apply_method(model, cfg.method, new_ids, gradient_checkpointing)
    model.train()
    return model, dtype


def _preflight(cfg, resume: str | None, force: bool, cuda: bool):
    """Every refusal, before any file is written. Returns (tokenizer, fingerprint, checkpoint, micro, gc,
    whether the prepared data must be rebuilt)."""
    from codetune.modeling import load_config_only, load_tokenizer, max_positions, tokenizer_fingerprint

    artifacts = has_training_artifacts(cfg.run_dir)
    sections = checks.check_foreign_run(cfg, force, artifacts)
    checks.check_packages(cfg)
    checks.check_device(cfg, cuda)
    model_config = load_config_only(cfg.model)
    checks.check_seq_len(cfg.data.seq_len, max_positions(model_config), cfg.model.name_or_path)
    tokenizer = load_tokenizer(cfg.model)
    fingerprint = tokenizer_fingerprint(tokenizer)
    report_path = cfg.run_dir / "data" / "prepare_report.json"
    stale = force and bool({"data", "model"} & set(sections))
    if report_path.is_file() and not stale:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        checks.check_prepared(report, fingerprint, cfg.data.seq_len, report_path.parent)
        if data_is_stale(report, cfg, fingerprint):
            if not force:
                raise RefusedError(
                    f"{report_path.parent} was prepared from other data settings than this config; "
                    "run `codetune prepare` again, or pass --force to re-prepare it"
                )
            stale = True
    ckpt = checkpoints.resolve_resume(cfg.run_dir, resume)
    checks.check_existing_progress(
        cfg,
        resume,
        force,
        has_checkpoints=bool(checkpoints.complete_checkpoints(cfg.run_dir)),
        finished=(cfg.run_dir / "final").exists(),
    )
    micro, gc = resolve_memory_plan(cfg, local_gpu() if cuda else None, force)
    return tokenizer, fingerprint, ckpt, micro, gc, stale


def preflight(cfg, resume: str | None = None, force: bool = False) -> None:
    """Every refusal `run` would make, without writing anything (the launcher's check before N processes)."""
    import torch

    _preflight(cfg, resume, force, torch.cuda.is_available())


def distributed_state(cuda: bool):
    """accelerate's PartialState when launched as several processes (it sets up the process group exactly as
    the Trainer's arguments would, so barriers work before the Trainer exists); None in a single process."""
    from codetune.train.launch import world_size

    if world_size() == 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=not cuda)


def run(
    cfg, resume: str | None = None, force: bool = False, extra_callbacks: list | None = None
) -> TrainResult:
    import torch
    from transformers import set_seed

    from codetune.config import write_resolved
    from codetune.report.training import METRICS_FILE, read_metrics
    from codetune.train.callbacks import (
        MetricsWriter,
        RichProgress,
        SaveAtEpochEnd,
        StopOnSignal,
        truncate_metrics,
    )
    from codetune.train.task_eval import TaskEval
    from codetune.train.trainer import (
        TRAINER_STATE,
        CodetuneTrainer,
        NonFiniteLoss,
        collate,
        training_arguments,
    )

    started = time.perf_counter()
    run_dir = cfg.run_dir
    cuda = torch.cuda.is_available()
    state = distributed_state(cuda)
    main = state is None or state.is_main_process
    tokenizer, fingerprint, ckpt, micro, gc, stale = _preflight(cfg, resume, force, cuda)
    if state is not None:
        state.wait_for_everyone()  # every rank has read the run directory before rank 0 changes it

    # ---- work starts here ----
    metrics_path = run_dir / METRICS_FILE
    if main:
        if resume is None:
            clear_training_artifacts(run_dir)  # only reachable with --force or when nothing is there
        if stale:
            shutil.rmtree(run_dir / "data", ignore_errors=True)
        write_resolved(cfg)
        checkpoints.remove_partials(run_dir)
        if ckpt is not None:
            truncate_metrics(metrics_path, ckpt.step)
        elif metrics_path.exists():
            metrics_path.unlink()
    with state.main_process_first() if state is not None else nullcontext():
        train_ds, valid_ds = load_data(cfg, fingerprint)  # rank 0 prepares missing data, the others wait

    set_seed(cfg.train.seed)  # LoRA init and new embedding rows
    model, dtype = load_model_for_training(cfg, tokenizer, gc, cuda)
    metrics = MetricsWriter(metrics_path, write=main)
    task_eval = [TaskEval(cfg, tokenizer, metrics)] if cfg.train.eval_tasks else []
    stopper = StopOnSignal()
    progress = RichProgress()
    trainer = CodetuneTrainer(
        model=model,
        args=training_arguments(cfg, run_dir, micro, gc, dtype, has_eval=valid_ds is not None, cuda=cuda),
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=[metrics, progress, SaveAtEpochEnd(), stopper, *task_eval, *(extra_callbacks or [])],
        run_dir=run_dir,
        keep_last=cfg.train.save_total_limit,
        metrics=metrics,
        resume_info=ckpt.info if ckpt else None,
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace its prints

    with stopper.installed():
        try:
            if ckpt is not None and checkpoint_is_final(ckpt, cfg):
                # The Trainer would run one more step past max_steps; the checkpoint already is the end.
                from transformers import TrainerState

                trainer._load_from_checkpoint(str(ckpt.path))
                trainer.state = TrainerState.load_from_json(str(ckpt.path / TRAINER_STATE))
            else:
                trainer.train(resume_from_checkpoint=str(ckpt.path) if ckpt else None)
        except NonFiniteLoss as exc:
            metrics.flush()
            last = checkpoints.latest_checkpoint(run_dir)
            kept = f"last good checkpoint: {last.path}" if last else "no checkpoint was written yet"
            raise CodetuneError(f"training stopped: {exc}; {kept}") from None
        finally:
            progress.close()
    if stopper.stopped:
        where = trainer.last_checkpoint or "none"
        raise CodetuneError(
            f"stopped by {stopper.signal_name} after step {trainer.state.global_step}; checkpoint: {where}; "
            "continue with --resume auto"
        )

    final_dir = save_final(trainer, cfg, run_dir, main)
    if not main:
        return TrainResult(run_dir, final_dir, trainer.state.global_step, ckpt.path if ckpt else None, None, None,
                           trainer.state.num_input_tokens_seen, time.perf_counter() - started, None)
    rows = read_metrics(metrics_path)
    from codetune.train.model_card import write_model_card

    write_model_card(final_dir, cfg, rows, method=cfg.method.kind, steps=trainer.state.global_step)
    from codetune.report.run import run as report

    report_html = report(run_dir).html
    if cfg.train.push_to_hub:
        from codetune.train.export import push

        push(final_dir, cfg.train.push_to_hub)  # last: a failure here leaves everything else in place
    last_loss = next((r["loss"] for r in reversed(rows) if r.get("loss") is not None), None)
    eval_loss = next((r["eval_loss"] for r in reversed(rows) if r.get("eval_loss") is not None), None)
    return TrainResult(
        run_dir=run_dir,
        final_dir=final_dir,
        steps=trainer.state.global_step,
        resumed_from=ckpt.path if ckpt else None,
        last_loss=last_loss,
        eval_loss=eval_loss,
        tokens_seen=trainer.state.num_input_tokens_seen,
        wall_s=time.perf_counter() - started,
        report_html=report_html,
    )


def checkpoint_is_final(ckpt: checkpoints.Checkpoint, cfg) -> bool:
    """Whether the checkpoint already reached the end of training (max_steps, or all epochs)."""
    if cfg.train.max_steps is not None:
        return ckpt.step >= cfg.train.max_steps
    try:
        state = json.loads((ckpt.path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return ckpt.step >= int(state.get("max_steps") or 0) > 0


def save_final(trainer, cfg, run_dir: Path, main: bool = True) -> Path:
    """`final/`: the model (full) or adapter (LoRA/QLoRA) + tokenizer, written aside then renamed. Every rank
    calls it (gathering sharded weights is collective); rank 0 writes."""
    final = run_dir / "final"
    staging = run_dir / ".partial-final"
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:  # one HF model, not per-rank shards
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    model = trainer.model
    base = Path(cfg.model.name_or_path).expanduser()
    if hasattr(model, "peft_config") and base.exists():
        # A relative base path would only resolve from today's working directory.
        for peft_cfg in model.peft_config.values():
            peft_cfg.base_model_name_or_path = str(base.resolve())
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if main:
        (staging / "training_args.bin").unlink(missing_ok=True)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    trainer.accelerator.wait_for_everyone()
    return final
