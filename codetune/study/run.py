"""`codetune study RECIPE_OR_CONFIG [--smoke] [--output-dir DIR]`: every stage of a recipe in order —
prepare, plan, train, evaluate the base model and every checkpoint, report — for each of its runs, then a
side-by-side comparison of the runs. Run it again and it picks up where it stopped: a stage whose
artifact is complete is skipped, and training resumes from its newest complete checkpoint.

Smoke mode swaps the real model for a tiny model of the same architecture (built by `init-model`) and the
real data for a few hundred locally-made examples in the same format, so every stage runs on a CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from codetune.config import Config
from codetune.errors import CodetuneError
from codetune.study.recipes import INIT_SCHEME, Recipe, is_recipe_file, load_recipe, resolve_run

STAGES = ("prepare", "plan", "train", "eval", "report")


@dataclass
class StudyResult:
    study_dir: Path
    runs: dict[str, dict] = field(default_factory=dict)
    report: Path | None = None

    def summary(self) -> str:
        lines = [f"study {self.study_dir}"]
        for name, info in self.runs.items():
            lines.append(f"  {name}: " + "; ".join(f"{k} {v}" for k, v in info.get("headline", {}).items()))
        if self.report is not None:
            lines.append(f"  report: {self.report}")
        return "\n".join(lines)


def recipe_from_config(path: Path) -> Recipe:
    """A plain codetune config is a one-run recipe (smoke mode then swaps in a tiny StarCoder2)."""
    from codetune.config import read_yaml

    raw = read_yaml(path)
    name = raw.get("name", path.stem)
    return Recipe.model_validate({"name": name, "description": f"config {path}", "real_run": f"codetune study {path}",
                                  "config": raw, "smoke": {"arch": "starcoder2", "data": "code"}})


def build_init_model(spec: str, models_dir: Path, extra_corpus: list[Path]) -> Path:
    """`init:<arch>:<size>` -> a directory built once by `codetune init-model` (tokenizer on local code)."""
    from codetune.init_model import default_corpus, init_model
    from codetune.study.recipes import corpus_placeholders

    _, arch, size = spec.split(":")
    out = models_dir / f"{arch}-{size}"
    if (out / "config.json").is_file():
        return out
    jdk = Path(corpus_placeholders()["${jdk_src_zip}"])
    corpus = [default_corpus(), *([jdk] if jdk.is_file() else []), *extra_corpus]
    init_model(arch, size, corpus, out, vocab_size=4096, max_corpus_mb=6.0)
    return out


def upstream_model(study_dir: Path, run: str) -> Path:
    """The model a later stage starts from: the run's final full model, or its LoRA merged into its base."""
    final = study_dir / run / "final"
    if not (final / "adapter_config.json").is_file():
        return final
    merged = study_dir / run / "merged"
    if not (merged / "config.json").is_file():
        from codetune.train.export import export

        export(study_dir / run, out=merged, merge=True)
    return merged


def _with(cfg: Config, **sections) -> Config:
    raw = cfg.model_dump(mode="json")
    for dotted, value in sections.items():
        section, _, key = dotted.partition("__")
        raw[section][key] = value
    return Config.model_validate(raw)


def _value(metrics: dict):
    for key in ("pass@1", "bits_per_byte", "accuracy", "execution_accuracy", "answer_f1", "exact_match"):
        value = metrics.get(key)
        value = value.get("value") if isinstance(value, dict) else value
        if isinstance(value, float | int):
            return key, value
    return None, None


def _headline(run_dir: Path) -> dict[str, str]:
    """Each task's headline metric for the base model and the last evaluated model: `base -> last`."""
    out: dict[str, str] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
        if evals:
            out["eval_loss"] = f"{evals[-1]:.3f}"
    evals = sorted((run_dir / "eval").glob("*/results.json"), key=_checkpoint_order)
    if not evals:
        return out
    first, last = (json.loads(p.read_text()).get("tasks", {}) for p in (evals[0], evals[-1]))
    for task, entry in last.items():
        pairs = [(task, entry.get("metrics", {}), first.get(task, {}).get("metrics", {}))]
        if task == "perplexity":  # per language: the gain on the new one and the forgetting of the old one
            before_by = pairs[0][2].get("by_language", {})
            pairs += [(f"perplexity[{lang}]", m, before_by.get(lang, {}))
                      for lang, m in sorted(pairs[0][1].get("by_language", {}).items())]
        for label, after_metrics, before_metrics in pairs:
            key, after = _value(after_metrics)
            _, before = _value(before_metrics)
            if key is not None:
                out[f"{label} {key}"] = f"{before:.3f} -> {after:.3f}" if before is not None else f"{after:.3f}"
    return out


def share_base_eval(study_dir: Path, cfg: Config, earlier: list[Config]) -> None:
    """Runs of a study that start from the same model on the same data share one evaluation of it."""
    import shutil

    target = cfg.run_dir / "eval" / "base"
    if (target / "results.json").is_file():
        return
    for other in earlier:
        source = other.run_dir / "eval" / "base"
        if (other.model == cfg.model and other.data == cfg.data and other.eval == cfg.eval
                and (source / "results.json").is_file()):
            shutil.copytree(source, target)  # evaluate re-checks the model fingerprint before reusing it
            return


def run_one(cfg: Config, progress_log: dict, force_stages: set[str] | None = None) -> dict:
    """The five stages of one run; each is skipped when its artifact is already complete."""
    from codetune.evaluate.run import run as evaluate
    from codetune.plan.run import run as plan
    from codetune.report.run import run as report
    from codetune.train.checkpoints import complete_checkpoints
    from codetune.train.run import run as train

    run_dir = cfg.run_dir
    timings: dict[str, float] = {}

    def stage(name: str, done: bool, fn) -> None:
        if done and name not in (force_stages or set()):
            return
        started = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - started, 2)
        progress_log.setdefault(run_dir.name, {})[name] = timings[name]

    from codetune.config import write_resolved
    from codetune.data.run import run as prepare

    stage("prepare", (run_dir / "data" / "prepare_report.json").is_file(), lambda: (write_resolved(cfg), prepare(cfg)))
    stage("plan", (run_dir / "plan.json").is_file(), lambda: plan(cfg))
    resume = "auto" if complete_checkpoints(run_dir) else None
    stage("train", (run_dir / "final").is_dir(), lambda: train(cfg, resume=resume))
    stage("eval", False, lambda: evaluate(run_dir=run_dir))  # evaluate skips what it already has
    stage("report", False, lambda: report(run_dir))
    return {"stages_s": timings, "headline": _headline(run_dir)}


def run(recipe_or_config: str, smoke: bool = False, output_dir: str | Path | None = None) -> StudyResult:
    path = Path(recipe_or_config)
    if path.suffix in (".yaml", ".yml") and path.is_file() and not is_recipe_file(path):
        recipe = recipe_from_config(path)
    else:
        recipe = load_recipe(recipe_or_config)
    study_dir = Path(output_dir) if output_dir else Path("runs") / (recipe.name + ("-smoke" if smoke else ""))
    study_dir.mkdir(parents=True, exist_ok=True)
    state_path = study_dir / "study.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    state.update({"recipe": recipe.name, "smoke": smoke, "runs": recipe.ordered_runs()})
    timings = state.setdefault("stage_seconds", {})

    smoke_data = None
    if smoke:
        from codetune.study import smoke_data as makers

        smoke_data = makers.make(recipe.smoke.data, study_dir / "smoke-data", recipe.smoke.examples,
                                 recipe.smoke.languages)
        if recipe.smoke.eval_data:
            extra = makers.make(recipe.smoke.eval_data, study_dir / "smoke-eval-data", recipe.smoke.examples)
            smoke_data.eval_datasets.update(extra.eval_datasets)
    result = StudyResult(study_dir)
    done: list[Config] = []
    for name in recipe.ordered_runs():
        cfg = resolve_run(recipe, name, study_dir, smoke=smoke)
        cfg = _resolve_models(cfg, recipe, name, study_dir, smoke_data)
        if smoke_data is not None:
            cfg = _with(cfg, data__sources=[smoke_data.source],
                        eval__datasets={**cfg.eval.datasets, **smoke_data.eval_datasets})
            if "graph" in smoke_data.extra:
                cfg = _with(cfg, eval__sparql_graph=smoke_data.extra["graph"])
        share_base_eval(study_dir, cfg, done)
        try:
            result.runs[name] = run_one(cfg, timings)
            done.append(cfg)
        finally:
            state_path.write_text(json.dumps(state, indent=2))
    from codetune.study.report import write_study_report

    compare = _compare(study_dir, recipe)
    result.report = write_study_report(study_dir, recipe.ordered_runs(), timings,
                                       {name: info["headline"] for name, info in result.runs.items()}, compare)
    state_path.write_text(json.dumps(state, indent=2))
    return result


def _resolve_models(cfg: Config, recipe: Recipe, name: str, study_dir: Path, smoke_data) -> Config:
    spec = recipe.runs[name]
    if spec.init_from is not None:
        return _with(cfg, model__name_or_path=str(upstream_model(study_dir, spec.init_from)))
    if cfg.model.name_or_path.startswith(INIT_SCHEME):
        extra = [smoke_data.train] if smoke_data is not None else []
        return _with(cfg, model__name_or_path=str(build_init_model(cfg.model.name_or_path, study_dir / "models",
                                                                   extra)))
    return cfg


def _compare(study_dir: Path, recipe: Recipe) -> Path | None:
    """Side by side in one comparison report: variants (runs from the same base) against that base; for
    stages (a run starting from another's model) the last stage against the model it started from, on
    the same held-out sets, which is where the gain and the forgetting show."""
    from codetune.report.compare import write_comparison

    order = recipe.ordered_runs()
    chained = [n for n in order if recipe.runs[n].init_from is not None]
    runs = chained[-1:] if chained else order
    entries: list[tuple[str, dict]] = []
    for name in runs:
        evals = sorted((study_dir / name / "eval").glob("*/results.json"), key=_checkpoint_order)
        if not evals:
            continue
        if not entries:
            start = recipe.runs[name].init_from
            entries.append((f"{start} (start)" if start else "base", json.loads(evals[0].read_text())))
        entries.append((name, json.loads(evals[-1].read_text())))
    if len(entries) < 2:
        return None
    try:
        return write_comparison(entries, study_dir / "report")
    except CodetuneError:
        raise
    except (OSError, ValueError) as exc:
        raise CodetuneError(f"could not write the study comparison: {exc}") from None


def _checkpoint_order(path: Path) -> tuple[int, int]:
    name = path.parent.name
    if name == "base":
        return (0, 0)
    if name.startswith("step-"):
        return (1, int(name.split("-")[1]))
    return (2, 0)
