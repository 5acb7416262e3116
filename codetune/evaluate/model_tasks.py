"""Evaluate one loaded model on one task: generate with `codetune.generation`, then score.

`run_task(model, tokenizer, task, cfg, ...)` returns `{"metrics", "protocol", "samples"}` for any task name:
perplexity (no generation), sql and sparql (scored in-process, see their modules), and the execution tasks
humaneval, multipl-e:<lang>, humaneval-x:<lang> (scored in the sandbox by `codetune.evaluate.score`).
`codetune.evaluate.run` decides which models and tasks to evaluate and writes the files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from codetune.config import EvalConfig
from codetune.errors import ConfigError, DataError

TEXT_TASKS = ("perplexity", "sql", "sparql", "accuracy")  # scored without the sandbox


def split_temperature(task: str) -> tuple[str, float | None]:
    """`humaneval@t0.8` -> ("humaneval", 0.8); a plain name -> (name, None)."""
    base, sep, temp = task.partition("@t")
    if not sep:
        return task, None
    try:
        value = float(temp)
    except ValueError:
        raise ConfigError(f"config error: eval task `{task}`: temperature suffix must be @t<number>") from None
    if value < 0 or base == "perplexity":
        raise ConfigError(f"config error: eval task `{task}`: a temperature applies to generation tasks, >= 0")
    return base, value


def _sampling(cfg: EvalConfig, stop: Sequence[str]):
    from codetune.generation import SamplingParams

    return SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                          n=cfg.n_samples, stop=tuple(stop), seed=cfg.seed)


def sampling_protocol(cfg: EvalConfig, limit: int | None) -> dict:
    return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
            "top_p": cfg.top_p if cfg.temperature > 0 else None, "n": cfg.n_samples, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "k": sorted(cfg.k), "limit": limit}


class Progress:
    """Rich progress bars for long phases; a no-op when disabled (tests, the trainer's own loop)."""

    def __init__(self, enabled: bool = True):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), transient=False)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def phase(self, description: str, total: int | None = None) -> Callable[..., None]:
        """A callback `advance(n, total=None)` for one phase."""
        if self._bar is None:
            return lambda n=1, total=None: None
        task_id = self._bar.add_task(description, total=total)

        def advance(n: int = 1, total: int | None = None) -> None:
            if total is not None:
                self._bar.update(task_id, total=total)
            self._bar.advance(task_id, n)

        return advance

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message)


def _generate(model, tokenizer, prompts: list[str], stops: Sequence[str], cfg: EvalConfig, progress, label: str):
    from codetune.generation import generate

    advance = progress.phase(f"{label}: generating", total=len(prompts) * cfg.n_samples)
    return generate(model, tokenizer, prompts, _sampling(cfg, stops), batch_size=cfg.batch_size, progress=advance)


def _generation_fields(gen) -> dict:
    return {"finish_reason": gen.finish_reason, "num_tokens": gen.num_tokens, "stop_sequence": gen.stop_sequence}


def _status_metrics(samples: list[dict], ks: Sequence[int]) -> dict:
    from codetune.evaluate.passk import pass_at_k

    counts: dict[str, list[int]] = {}
    for s in samples:
        n_c = counts.setdefault(s["task_id"], [0, 0])
        n_c[0] += 1
        n_c[1] += s["status"] == "passed"
    return {**pass_at_k({k: (n, c) for k, (n, c) in counts.items()}, list(ks)),
            "statuses": dict(Counter(s["status"] for s in samples)),
            "finish_reasons": dict(Counter(s.get("finish_reason") for s in samples)),
            "problems": len(counts), "samples": len(samples)}


def run_perplexity(model, tokenizer, cfg: EvalConfig, run_dir: Path | None, limit: int | None, progress) -> dict:
    from codetune.evaluate.perplexity import evaluate_perplexity, limit_per_language, read_paths, read_valid_files

    docs, sources = [], []
    valid = run_dir / "data" / "valid_files.jsonl" if run_dir is not None else None
    if valid is not None and valid.is_file():
        docs += read_valid_files(valid)
        sources.append(str(valid))
    if cfg.perplexity_paths:
        docs += read_paths(cfg.perplexity_paths)
        sources += cfg.perplexity_paths
    if not docs:
        raise DataError("perplexity needs held-out files: evaluate a prepared run, or set eval.perplexity_paths "
                        "(--perplexity-path) to files or directories of code")
    docs = limit_per_language(docs, limit)
    result = evaluate_perplexity(model, tokenizer, docs, cfg.max_length, cfg.stride, cfg.batch_size,
                                 progress=progress.phase("perplexity: windows"))
    from codetune.evaluate.tasks import sha256_file

    protocol = {"task": "perplexity", "sources": sources, "limit_per_language": limit, **result.protocol,
                "dataset_sha256": {s: sha256_file(Path(s)) for s in sources if Path(s).is_file()}}
    return {"metrics": {**result.overall, "by_language": result.by_language}, "protocol": protocol,
            "samples": [{"task": "perplexity", **row} for row in result.per_file]}


def run_sql(model, tokenizer, cfg: EvalConfig, limit: int | None, progress) -> dict:
    from codetune.evaluate.tasks import sha256_file, sql

    path = cfg.datasets.get("sql")
    if not path:
        raise DataError("the sql task needs a dataset: --dataset sql=PATH.jsonl (question, gold query, context/db)")
    examples = sql.load_sql_dataset(path, limit)
    gens = _generate(model, tokenizer, [sql.build_prompt(e) for e in examples], sql.STOP_SEQUENCES, cfg, progress,
                     "sql")
    advance = progress.phase("sql: executing", total=len(examples))
    samples = []
    for example, outs in zip(examples, gens, strict=True):
        rows = sql.score_example(example, [g.text for g in outs], cfg.timeout_s)
        samples += [{"task": "sql", **row, **_generation_fields(g)} for row, g in zip(rows, outs, strict=True)]
        advance(1)
    metrics = {**sql.summarize_sql(samples), **_status_metrics(samples, cfg.k)}
    protocol = {"task": "sql", "dataset": str(path), "dataset_sha256": sha256_file(Path(path)),
                "stop_sequences": list(sql.STOP_SEQUENCES), "prompt_tail": sql.PROMPT_TAIL,
                "sampling": sampling_protocol(cfg, limit), "timeout_s": cfg.timeout_s}
    return {"metrics": metrics, "protocol": protocol, "samples": samples}


def run_sparql(model, tokenizer, cfg: EvalConfig, limit: int | None, progress) -> dict:
    from codetune.evaluate.tasks import sha256_file, sparql

    path = cfg.datasets.get("sparql")
    if not path:
        raise DataError("the sparql task needs a dataset: --dataset sparql=PATH (JSONL, or NSpM .en/.sparql files)")
    examples = sparql.load_sparql_dataset(path, limit)
    graph = sparql.load_graph(cfg.sparql_graph) if cfg.sparql_graph else None
    gens = _generate(model, tokenizer, [sparql.build_prompt(e) for e in examples], sparql.STOP_SEQUENCES, cfg,
                     progress, "sparql")
    advance = progress.phase("sparql: scoring", total=len(examples))
    samples = []
    for example, outs in zip(examples, gens, strict=True):
        rows = sparql.score_example(example, [g.text for g in outs], graph, cfg.timeout_s)
        samples += [{"task": "sparql", **row, **_generation_fields(g)} for row, g in zip(rows, outs, strict=True)]
        advance(1)
    metrics = {**sparql.summarize_sparql(samples, {e.task_id: e.gold for e in examples}),
               **_status_metrics(samples, cfg.k)}
    hashed = [p for p in (Path(path), Path(cfg.sparql_graph) if cfg.sparql_graph else None) if p and p.is_file()]
    protocol = {"task": "sparql", "dataset": str(path), "graph": cfg.sparql_graph,
                "dataset_sha256": {str(p): sha256_file(p) for p in hashed},
                "stop_sequences": list(sparql.STOP_SEQUENCES), "sampling": sampling_protocol(cfg, limit),
                "timeout_s": cfg.timeout_s}
    return {"metrics": metrics, "protocol": protocol, "samples": samples}


def run_accuracy(model, tokenizer, cfg: EvalConfig, limit: int | None, progress) -> dict:
    from codetune.evaluate.tasks import accuracy, sha256_file

    path = cfg.datasets.get("accuracy")
    if not path:
        raise DataError("the accuracy task needs a dataset: --dataset accuracy=PATH.jsonl (prompt, completion)")
    examples = accuracy.load_accuracy_dataset(path, limit)
    specials = list(tokenizer.all_special_tokens)
    stops = accuracy.stop_sequences(examples, specials)
    greedy = cfg.model_copy(update={"temperature": 0.0, "n_samples": 1})
    gens = _generate(model, tokenizer, [e.prompt for e in examples], stops, greedy, progress, "accuracy")
    samples = []
    for example, outs in zip(examples, gens, strict=True):
        gold = accuracy.normalize_answer(example.gold, specials)
        answer = accuracy.normalize_answer(outs[0].text, specials)
        samples.append({"task": "accuracy", "task_id": example.task_id, "sample_index": 0,
                        "completion": outs[0].text, "gold": gold, "status": "passed" if answer == gold else "failed",
                        **_generation_fields(outs[0])})
    protocol = {"task": "accuracy", "dataset": str(path), "dataset_sha256": sha256_file(Path(path)),
                "stop_sequences": list(stops), "sampling": sampling_protocol(greedy, limit),
                "match": "exact, whitespace and special tokens stripped"}
    return {"metrics": {**accuracy.summarize(samples, cfg.pass_mark), **_status_metrics(samples, [1])},
            "protocol": protocol, "samples": samples}


class _RecordingSandbox:
    """Hands `score` the real sandbox while keeping each execution for samples.jsonl and driving our bar."""

    def __init__(self, sandbox, advance):
        self.sandbox, self.advance, self.executions = sandbox, advance, []

    def run(self, programs, progress=None):
        self.executions = self.sandbox.run(programs, progress=self.advance)
        return self.executions

    def describe(self) -> dict:
        return self.sandbox.describe()


STDERR_EXCERPT_CHARS = 1000


def run_execution(model, tokenizer, task_name: str, cfg: EvalConfig, limit: int | None, sandbox, progress) -> dict:
    from codetune.evaluate.score import Sample, score
    from codetune.evaluate.tasks import load_task

    task = load_task(task_name, cfg.datasets.get(task_name))
    problems = task.problems(limit)
    # generate() takes one stop list per call: problems sharing stop sequences are generated together.
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, problem in enumerate(problems):
        groups.setdefault(tuple(problem.stop_sequences), []).append(index)
    generations: list = [None] * len(problems)
    for stops, indices in groups.items():
        outs = _generate(model, tokenizer, [problems[i].prompt for i in indices], stops, cfg, progress, task.name)
        for i, out in zip(indices, outs, strict=True):
            generations[i] = out
    samples = []
    for problem, outs in zip(problems, generations, strict=True):
        for gen in outs:
            # generate() cuts before the stop sequence; the task decides whether it keeps it (closing braces).
            completion = task.truncate(problem, gen.text + (gen.stop_sequence or ""))
            samples.append(Sample(problem.task_id, completion, extra=_generation_fields(gen)))
    recorder = _RecordingSandbox(sandbox, progress.phase(f"{task.name}: executing", total=len(samples)))
    results = score(task, samples, recorder, ks=list(cfg.k), sampling=sampling_protocol(cfg, limit), progress=False)
    rows, seen = [], Counter()
    for sample, execution in zip(samples, recorder.executions, strict=True):
        record = execution.to_dict()
        record.pop("stdout", None)
        record["stderr"] = record.get("stderr", "")[-STDERR_EXCERPT_CHARS:]
        rows.append({"task": task.name, "task_id": sample.task_id, "sample_index": seen[sample.task_id],
                     "completion": sample.completion, **sample.extra, **record})
        seen[sample.task_id] += 1
    metrics = {**results["metrics"], "statuses": {s: n for s, n in results["status_counts"].items() if n},
               "finish_reasons": dict(Counter(s.extra["finish_reason"] for s in samples)),
               "problems": results["problems_scored"], "samples": results["samples"], "timing": results["timing"]}
    return {"metrics": metrics, "protocol": {**results["protocol"], "limit": limit}, "samples": rows}


def run_task(model, tokenizer, task: str, cfg: EvalConfig, *, run_dir: Path | None = None,
             limit: int | None = None, sandbox=None, progress: Progress | None = None) -> dict:
    """One task on one loaded model; `sandbox` is needed for execution tasks. A `@t<T>` suffix (humaneval@t0.8)
    runs the task at sampling temperature T, so one evaluation can hold a temperature sweep."""
    progress = progress or Progress(enabled=False)
    base, temperature = split_temperature(task)
    if temperature is not None:
        entry = run_task(model, tokenizer, base, cfg.model_copy(update={"temperature": temperature}),
                         run_dir=run_dir, limit=limit, sandbox=sandbox, progress=progress)
        entry["protocol"]["task"] = task
        for sample in entry["samples"]:
            sample["task"] = task
        return entry
    if task == "perplexity":
        return run_perplexity(model, tokenizer, cfg, run_dir, limit, progress)
    if task == "sql":
        return run_sql(model, tokenizer, cfg, limit, progress)
    if task == "sparql":
        return run_sparql(model, tokenizer, cfg, limit, progress)
    if task == "accuracy":
        return run_accuracy(model, tokenizer, cfg, limit, progress)
    return run_execution(model, tokenizer, task, cfg, limit, sandbox, progress)
