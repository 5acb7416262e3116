"""MultiPL-E: HumanEval translated to other languages (Hub `nuprl/MultiPL-E`, config `humaneval-<lang>`, or a
local JSONL of the same rows), cut at the dataset's own stop tokens.

Program = prompt + completion + "\\n" + tests, as MultiPL-E's evaluator builds it. The dataset has no
canonical solutions. Java programs go in Problem.java (the class is `Problem`; tests use org.javatuples).
"""

from __future__ import annotations

from codetune.evaluate.languages import Language
from codetune.evaluate.tasks import Problem, Task, load_rows, require_fields

HUB_NAME = "nuprl/MultiPL-E"
FILE_NAMES = {"java": "Problem.java"}


def load(language: Language, dataset: str | None = None) -> Task:
    config = f"humaneval-{language.name}"
    rows, source, digest = load_rows(dataset, f"{config}.jsonl", HUB_NAME, config)
    require_fields(rows, ("name", "prompt", "tests", "stop_tokens"), source)
    problems = [
        Problem(task_id=row["name"], prompt=row["prompt"], tests=row["tests"],
                stop_sequences=tuple(row["stop_tokens"]))
        for row in rows
    ]
    return Task(name=f"multipl-e:{language.name}", language=language, dataset=source, dataset_sha256=digest,
                file_name=FILE_NAMES.get(language.name), problems_list=problems)
