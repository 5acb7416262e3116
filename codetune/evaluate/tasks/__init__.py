"""Execution tasks: where a benchmark's problems come from, how a completion becomes a runnable program, and
where a completion is cut.

`load_task("humaneval" | "multipl-e:<lang>" | "humaneval-x:<lang>", dataset=None)` returns a `Task`; generation
calls `task.problems()`, prompts with `problem.prompt`, stops at `problem.stop_sequences` and cleans up with
`task.truncate`; scoring turns `(problem, completion)` into a `sandbox.Program` with `task.program`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from codetune.errors import ConfigError, DataError
from codetune.evaluate.languages import Language, get_language
from codetune.evaluate.sandbox import Program


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    tests: str
    stop_sequences: tuple[str, ...]
    canonical_solution: str | None = None
    entry_point: str | None = None
    setup: str = ""  # put before the prompt in the program (headers the tests assume), never shown to a model


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str], keep: bool = False) -> str:
    """Cut `text` at the earliest stop sequence; with `keep` the stop sequence itself stays."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if stop and at != -1:
            cut = min(cut, at + (len(stop) if keep else 0))
    return text[:cut]


@dataclass
class Task:
    """Base of every execution task. Subclasses fill `problems_list` and override `program` when needed."""

    name: str
    language: Language
    dataset: str  # the path or hub id the problems were read from
    dataset_sha256: str | None = None
    keep_stop: bool = False  # brace languages of HumanEval-X keep the closing "}" they stop on
    file_name: str | None = None
    problems_list: list[Problem] = field(default_factory=list)

    def problems(self, limit: int | None = None) -> list[Problem]:
        return self.problems_list[:limit] if limit else list(self.problems_list)

    def truncate(self, problem: Problem, text: str) -> str:
        return truncate_at_stop(text, problem.stop_sequences, keep=self.keep_stop)

    def program_text(self, problem: Problem, completion: str, includes_prompt: bool = False) -> str:
        head = completion if includes_prompt else problem.prompt + completion
        return problem.setup + head + "\n" + problem.tests

    def program(self, problem: Problem, completion: str, includes_prompt: bool = False) -> Program:
        return Program(language=self.language.name, source=self.program_text(problem, completion, includes_prompt),
                       file_name=self.file_name)

    def protocol(self) -> dict:
        stops = sorted({s for p in self.problems_list for s in p.stop_sequences})
        return {"task": self.name, "language": self.language.name, "dataset": self.dataset,
                "dataset_sha256": self.dataset_sha256, "stop_sequences": stops, "keep_stop": self.keep_stop,
                "problems": len(self.problems_list)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_jsonl(path: Path):
    """(line number, row) of a JSONL file (plain or .gz), blank lines skipped; DataError names the file and
    line on bad input."""
    import gzip

    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


def first_field(row: dict, names) -> str | None:
    """The first non-empty of several field names datasets use for the same thing."""
    for name in names:
        if row.get(name):
            return str(row[name])
    return None


def load_hub_rows(name: str, config: str | None, split: str = "test") -> list[dict]:
    """Rows of a Hub dataset split; DataError (one line) when it cannot be loaded, e.g. offline."""
    try:
        import datasets

        return list(datasets.load_dataset(name, config, split=split))
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one actionable line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot load {name} ({config}) from the Hub: {reason}; pass --dataset PATH "
                        f"to a local JSONL copy") from None


def load_rows(dataset: str | None, file_name: str, hub_name: str,
              hub_config: str) -> tuple[list[dict], str, str | None]:
    """(rows, source, sha256) from a local JSONL (a file, or `file_name` in a directory) or else the Hub."""
    if dataset and Path(dataset).is_dir():
        dataset = str(Path(dataset) / file_name)
    if dataset and (Path(dataset).suffix in (".jsonl", ".gz") or Path(dataset).exists()):
        path = Path(dataset)
        return read_jsonl(path), str(path), sha256_file(path)
    name = dataset or hub_name
    return load_hub_rows(name, hub_config), f"{name}:{hub_config}", None


def require_fields(rows: list[dict], fields: tuple[str, ...], source: str) -> None:
    for number, row in enumerate(rows, 1):
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(f"{source}: row {number} lacks field(s) {', '.join(missing)}")


def load_task(name: str, dataset: str | None = None) -> Task:
    """The task named `name`: humaneval, multipl-e:<lang> or humaneval-x:<lang>."""
    from codetune.evaluate.tasks import humaneval, humaneval_x, multipl_e

    family, _, lang = name.partition(":")
    family = family.lower()
    if family == "humaneval" and not lang:
        return humaneval.load(dataset)
    if family in ("multipl-e", "multiple") and lang:
        return multipl_e.load(get_language(lang), dataset)
    if family == "humaneval-x" and lang:
        return humaneval_x.load(get_language(lang), dataset)
    raise ConfigError(f"unknown execution task `{name}`; use humaneval, multipl-e:<lang> or humaneval-x:<lang>")
