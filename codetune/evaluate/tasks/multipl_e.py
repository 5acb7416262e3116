"""MultiPL-E: HumanEval translated to other languages (Hub `nuprl/MultiPL-E`, config `humaneval-<lang>`, or a
local JSONL of the same rows), cut at the dataset's own stop tokens.

Program = prompt + completion + "\\n" + tests, as MultiPL-E's evaluator builds it. The dataset has no
canonical solutions. Java programs go in Problem.java (the class is `Problem`; tests use org.javatuples).
"""

from __future__ import annotations

from pathlib import Path

from codetune.evaluate.languages import Language
from codetune.evaluate.tasks import Problem, Task, load_hub_rows, read_jsonl, require_fields, sha256_file

HUB_NAME = "nuprl/MultiPL-E"
FILE_NAMES = {"java": "Problem.java"}


def load(language: Language, dataset: str | None = None) -> Task:
    config = f"humaneval-{language.name}"
    if dataset and Path(dataset).is_dir():
        dataset = str(Path(dataset) / f"{config}.jsonl")
    if dataset and (Path(dataset).suffix in (".jsonl", ".gz") or Path(dataset).exists()):
        path = Path(dataset)
        rows, source, digest = read_jsonl(path), str(path), sha256_file(path)
    else:
        name = dataset or HUB_NAME
        rows, source, digest = load_hub_rows(name, config), f"{name}:{config}", None
    require_fields(rows, ("name", "prompt", "tests", "stop_tokens"), source)
    problems = [
        Problem(task_id=row["name"], prompt=row["prompt"], tests=row["tests"],
                stop_sequences=tuple(row["stop_tokens"]))
        for row in rows
    ]
    return Task(name=f"multipl-e:{language.name}", language=language, dataset=source, dataset_sha256=digest,
                file_name=FILE_NAMES.get(language.name), problems_list=problems)
