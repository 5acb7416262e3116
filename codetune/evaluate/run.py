"""`codetune eval`: evaluate one model, or the base model and every checkpoint of a run, on named tasks.

    codetune eval --model PATH|HUB [--adapter PATH] --tasks perplexity,humaneval,multipl-e:java [--output DIR]
    codetune eval RUN_DIR [--tasks ...]

Each evaluated model gets `<out>/<name>/results.json` (every metric, and the protocol that produced it:
task, dataset path and sha256, stop sequences, sampling parameters, n, limit, codetune version) and
`samples.jsonl` (every generation with its finish reason, status, exit code, stderr excerpt and timing).
`<out>` is `--output DIR`, or `RUN_DIR/eval`. A task whose stored protocol equals the requested one is
not evaluated again, so re-running on a run that gained checkpoints only evaluates the new ones.

Generation goes through `codetune.generation`; execution tasks are scored by `codetune.evaluate.score` in
the sandbox; `sql` and `sparql` score in-process (see their modules). `evaluate_checkpoint` is the entry
the trainer calls at each checkpoint on a small fixed budget.

`codetune eval ... --num-processes N` runs this in N launched processes: generation is split between them
and the results are those of one process (see `codetune.evaluate.shard`); rank 0 writes every file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from codetune import __version__
from codetune.config import EvalConfig, ModelConfig
from codetune.errors import ConfigError, DataError
from codetune.evaluate.model_tasks import TEXT_TASKS, Progress, sampling_protocol, split_temperature

EXECUTION_FAMILIES = ("humaneval", "multipl-e", "multiple", "humaneval-x")


@dataclass(frozen=True)
class Target:
    """One model to evaluate: a name for its results folder, what to load, and an optional adapter."""

    name: str
    model: ModelConfig
    adapter: str | None = None


@dataclass
class EvalOutcome:
    results: dict[str, dict]  # target name -> results.json content
    out_dir: Path
    report: Path | None = None
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = f"results under {self.out_dir}" + (f"; comparison report {self.report}" if self.report else "")
        return "\n".join([*self.lines, where])


def check_tasks(tasks: Sequence[str]) -> list[str]:
    """Validate task names before any model is loaded; ConfigError names the bad one."""
    clean = [t.strip() for t in tasks if t.strip()]
    if not clean:
        raise ConfigError("config error: no eval tasks given (e.g. --tasks perplexity,humaneval)")
    for task in clean:
        name = split_temperature(task)[0]
        family = name.split(":", 1)[0].lower()
        if name in TEXT_TASKS or (family in EXECUTION_FAMILIES and (family == "humaneval") == (":" not in name)):
            continue
        raise ConfigError(f"config error: unknown eval task `{task}`; use perplexity, sql, sparql, humaneval, "
                          "multipl-e:<lang> or humaneval-x:<lang>, optionally with @t<temperature>")
    return clean


def _step(path: Path) -> int:
    match = re.fullmatch(r"step-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _target_for(name: str, path: Path, base: ModelConfig) -> Target:
    has_tokenizer = (path / "tokenizer_config.json").is_file()
    if (path / "adapter_config.json").is_file():
        tokenizer = str(path) if has_tokenizer else base.tokenizer
        return Target(name, base.model_copy(update={"tokenizer": tokenizer}), adapter=str(path))
    return Target(name, base.model_copy(update={"name_or_path": str(path), "revision": None,
                                                "tokenizer": None if has_tokenizer else base.tokenizer}))


def run_targets(run_dir: Path) -> tuple[list[Target], EvalConfig]:
    """The base model, every complete checkpoint (by step) and the final model of a training run (unless it is
    the last checkpoint's weights again)."""
    from codetune.config import load_config

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{run_dir} is not a run directory (no config.yaml); pass --model to evaluate a model")
    cfg = load_config(config_path)
    targets = [Target("base", cfg.model)]
    checkpoints = sorted((p for p in (run_dir / "checkpoints").glob("step-*") if _is_model_dir(p) and _step(p) >= 0),
                         key=_step) if (run_dir / "checkpoints").is_dir() else []
    targets += [_target_for(p.name, p, cfg.model) for p in checkpoints]
    if _is_model_dir(run_dir / "final") and not (checkpoints and same_weights(checkpoints[-1], run_dir / "final")):
        targets.append(_target_for("final", run_dir / "final", cfg.model))
    return targets, cfg.eval


WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    """True when two model directories hold byte-identical weights (the final model is usually the last
    checkpoint saved again): evaluating both would only repeat the work."""
    import filecmp

    for name in WEIGHT_FILES:
        fa, fb = a / name, b / name
        if fa.is_file() or fb.is_file():
            return fa.is_file() and fb.is_file() and filecmp.cmp(fa, fb, shallow=False)
    return False


def model_target(model: str, adapter: str | None = None, name: str | None = None) -> Target:
    label = name or re.sub(r"[^\w.-]+", "_", Path(model.rstrip("/")).name or model) + ("-adapter" if adapter else "")
    return Target(label, ModelConfig(name_or_path=model), adapter)


def _enclosing_run(path: Path) -> Path | None:
    """The run directory around a checkpoint (`<run>/final`, `<run>/checkpoints/step-N`), for its held-out files."""
    for candidate in (path.parent, path.parent.parent):
        if (candidate / "config.yaml").is_file() and (candidate / "data").is_dir():
            return candidate
    return None


def _fingerprint(target: Target) -> str:
    """Names, sizes and mtimes of a local model's files: changes when a checkpoint is rewritten."""
    import hashlib

    parts = []
    for root in (Path(target.model.name_or_path), Path(target.adapter) if target.adapter else None):
        if root is not None and root.is_dir():
            parts += [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                      for p in sorted(root.rglob("*")) if p.is_file()]
        elif root is not None:
            parts.append(f"{root}@{target.model.revision}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def task_request(task: str, cfg: EvalConfig, limit: int | None) -> dict:
    """Everything that decides a task's result besides the model; equal requests are not re-evaluated."""
    request = {"task": task, "limit": limit, "dataset": cfg.datasets.get(split_temperature(task)[0])}
    if task == "perplexity":
        return {**request, "stride": cfg.stride, "max_length": cfg.max_length, "paths": cfg.perplexity_paths}
    request.update(sampling_protocol(cfg, limit), timeout_s=cfg.timeout_s)
    if task == "sparql":
        request["graph"] = cfg.sparql_graph
    if task not in ("sql", "sparql"):
        request.update(memory_mb=cfg.memory_mb, allow_unsafe=cfg.allow_unsafe)
    return request


def _read_existing(out: Path) -> tuple[dict, list[dict]]:
    results_path, samples_path = out / "results.json", out / "samples.jsonl"
    if not results_path.is_file():
        return {}, []
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return {}, []  # unreadable: evaluate again
    return results, samples


def _write(out: Path, results: dict, samples: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples)),
                       ("results.json", json.dumps(results, indent=2) + "\n")):
        tmp = out / f"{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


def _load(target: Target, local_rank: int = 0):
    import torch

    from codetune.modeling import load_model, load_tokenizer

    tokenizer = load_tokenizer(target.model)
    device_map = {"": local_rank} if torch.cuda.is_available() else None  # this process's GPU
    return load_model(target.model, adapter=target.adapter, tokenizer=tokenizer, device_map=device_map), tokenizer


def evaluate_target(target: Target, tasks: Sequence[str], cfg: EvalConfig, out: Path, *, run_dir: Path | None,
                    limit: int | None, progress, sandbox_factory, force: bool = False, shard=None) -> dict:
    """Evaluate `target` on the tasks whose stored request differs; write results.json + samples.jsonl in `out`."""
    from codetune.evaluate.model_tasks import run_task

    fingerprint = _fingerprint(target)
    results, samples = ({}, []) if force else _read_existing(out)
    if results.get("model", {}).get("fingerprint") != fingerprint:
        results, samples = {}, []
    stored = results.get("tasks", {})
    todo = [t for t in tasks if stored.get(t, {}).get("request") != task_request(t, cfg, limit)]
    if not todo:
        progress.log(f"{target.name}: up to date ({', '.join(tasks)})")
        return results
    model, tokenizer = _load(target, shard.local_rank if shard else 0)
    entries = {}
    for task in todo:
        sandbox = sandbox_factory() if split_temperature(task)[0] not in TEXT_TASKS else None
        entry = run_task(model, tokenizer, task, cfg, run_dir=run_dir, limit=limit, sandbox=sandbox, progress=progress)
        entry["protocol"].update(codetune_version=__version__, model=target.model.name_or_path, adapter=target.adapter)
        entries[task] = {"metrics": entry["metrics"], "protocol": entry["protocol"],
                         "request": task_request(task, cfg, limit)}
        samples = [s for s in samples if s.get("task") != task] + entry["samples"]
    results = {
        "model": {"name": target.name, "name_or_path": target.model.name_or_path, "adapter": target.adapter,
                  "fingerprint": fingerprint},
        "codetune_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tasks": {t: entries.get(t) or stored[t] for t in [*stored, *todo] if t in entries or t in stored},
    }
    if shard is None or shard.is_main:
        _write(out, results, samples)
    del model
    _free_accelerator_memory()
    return results


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _headline_line(name: str, results: dict) -> str:
    from codetune.report.compare import headline

    parts = []
    for task, entry in results.get("tasks", {}).items():
        label, value = headline(task, entry)[0]
        parts.append(f"{label} {value:.3f}" if value is not None else f"{label} n/a")
    return f"{name}: " + "; ".join(parts)


def _with_overrides(cfg: EvalConfig, overrides: dict) -> EvalConfig:
    from pydantic import ValidationError

    from codetune.config import _format_validation_error

    try:
        return EvalConfig.model_validate({**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc).replace("config error: `", "config error: `eval.")) from None


def run(run_dir: Path | None = None, model: str | None = None, adapter: str | None = None,
        tasks: Sequence[str] | None = None, output: Path | None = None, overrides: dict | None = None,
        force: bool = False, show_progress: bool = True) -> EvalOutcome:
    """`codetune eval RUN_DIR` or `codetune eval --model M`: evaluate, write files, compare checkpoints."""
    from codetune.evaluate import shard as sharding
    from codetune.evaluate.sandbox import Sandbox
    from codetune.generation import sharded

    if (run_dir is None) == (model is None):
        raise ConfigError("eval needs either RUN_DIR or --model (not both)")
    if run_dir is not None:
        targets, base_cfg = run_targets(Path(run_dir))
        out_dir = Path(output) if output else Path(run_dir) / "eval"
        enclosing = Path(run_dir)
    else:
        targets, base_cfg = [model_target(model, adapter)], EvalConfig()
        enclosing = _enclosing_run(Path(model)) if Path(model).is_dir() else None
        out_dir = Path(output) if output else Path("eval") / targets[0].name
    cfg = _with_overrides(base_cfg, overrides or {})
    limit = cfg.limit
    names = check_tasks(tasks or cfg.tasks)
    sandboxes: list = []
    shard = sharding.shard_from_env()  # launched with --num-processes N: this process's share

    def sandbox_factory():
        if not sandboxes:  # detect isolation once, and only when an execution task runs
            sandbox = Sandbox(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, workers=cfg.workers,
                              allow_unsafe=cfg.allow_unsafe)
            sandboxes.append(sharding.MainRankSandbox(sandbox, shard) if shard else sandbox)
        return sandboxes[0]

    outcome = EvalOutcome({}, out_dir)
    try:
        with Progress(show_progress and (shard is None or shard.is_main)) as progress, sharded(shard):
            for target in targets:
                out = out_dir / target.name if run_dir is not None else out_dir
                results = evaluate_target(target, names, cfg, out, run_dir=enclosing, limit=limit,
                                          progress=progress, sandbox_factory=sandbox_factory, force=force,
                                          shard=shard)
                if shard is not None:
                    shard.barrier()  # rank 0 has written this target's files before any rank reads the next
                outcome.results[target.name] = results
                outcome.lines.append(_headline_line(target.name, results))
    finally:
        sharding.close(shard)
    if shard is not None and not shard.is_main:
        return outcome
    if run_dir is not None:
        from codetune.report.compare import write_comparison

        outcome.report = write_comparison(list(outcome.results.items()), out_dir)
    return outcome


def flat_metrics(entries: dict[str, dict], prefix: str = "eval/") -> dict[str, float]:
    """Scalar metrics of each task under `<prefix><task>/<metric>` keys, for metrics.jsonl."""
    flat: dict[str, float] = {}
    for task, entry in entries.items():
        m = entry["metrics"]
        if task == "perplexity":
            for key in ("perplexity", "bits_per_byte", "bits_per_token"):
                flat[f"{prefix}perplexity/{key}"] = m.get(key)
            for lang, sub in m.get("by_language", {}).items():
                flat[f"{prefix}perplexity/{lang}/bits_per_byte"] = sub.get("bits_per_byte")
            continue
        for key, value in m.items():
            if key.startswith("pass@") and isinstance(value, dict):
                flat[f"{prefix}{task}/{key}"] = value["value"]
            elif key in ("exact_match", "execution_accuracy", "executable", "bleu", "answer_f1", "accuracy"):
                flat[f"{prefix}{task}/{key}"] = value
    return {k: v for k, v in flat.items() if v is not None}


def evaluate_checkpoint(model, tokenizer, tasks: Sequence[str], limit: int | None = 20, *,
                        eval_cfg: EvalConfig | None = None, run_dir: str | Path | None = None,
                        output_dir: str | Path | None = None, prefix: str = "eval/") -> dict[str, float]:
    """Evaluate an in-memory model (the trainer's, at a checkpoint) on `tasks` with `limit` problems (files per
    language for perplexity); returns flat metrics for metrics.jsonl, and writes results.json + samples.jsonl
    under `output_dir` when given. The model is put in eval mode and restored; call it on one rank only."""
    from codetune.evaluate.model_tasks import run_task
    from codetune.evaluate.sandbox import Sandbox

    cfg = eval_cfg or EvalConfig()
    names = check_tasks(tasks)
    sandbox = None
    if any(split_temperature(t)[0] not in TEXT_TASKS for t in names):
        sandbox = Sandbox(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, workers=cfg.workers,
                          allow_unsafe=cfg.allow_unsafe)
    was_training = model.training
    model.eval()
    entries, samples = {}, []
    try:
        for task in names:
            entry = run_task(model, tokenizer, task, cfg, run_dir=Path(run_dir) if run_dir else None, limit=limit,
                             sandbox=sandbox)
            entries[task] = {"metrics": entry["metrics"], "protocol": {**entry["protocol"],
                                                                       "codetune_version": __version__}}
            samples += entry["samples"]
    finally:
        if was_training:
            model.train()
    if output_dir is not None:
        _write(Path(output_dir), {"codetune_version": __version__,
                                  "created": datetime.now(UTC).isoformat(timespec="seconds"), "tasks": entries},
               samples)
    return flat_metrics(entries, prefix)
