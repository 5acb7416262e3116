"""Held-out accuracy for prompt/completion data: the model's greedy answer to each prompt must equal the
gold completion exactly (after stripping whitespace and special tokens). It is the "accuracy test with a
pass mark" fine-tuners run after training a model to emit labels or short answers between special tokens.

Rows (JSONL) carry `prompt` and `completion` (or `input`/`output`). A pass mark, when given, is reported as
met or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codetune.errors import DataError
from codetune.evaluate.tasks import first_field, iter_jsonl

PROMPT_FIELDS = ("prompt", "input")
ANSWER_FIELDS = ("completion", "output", "answer")


@dataclass(frozen=True)
class AccuracyExample:
    task_id: str
    prompt: str
    gold: str


def load_accuracy_dataset(path: str | Path, limit: int | None = None) -> list[AccuracyExample]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"accuracy dataset not found: {path} (a JSONL of prompt and completion)")
    examples = []
    for line_no, row in iter_jsonl(path):
        prompt, gold = first_field(row, PROMPT_FIELDS), first_field(row, ANSWER_FIELDS)
        if prompt is None or gold is None:
            raise DataError(f"{path}:{line_no}: needs {'/'.join(PROMPT_FIELDS)} and {'/'.join(ANSWER_FIELDS)}")
        examples.append(AccuracyExample(str(row.get("task_id", f"accuracy/{len(examples)}")), prompt, gold))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"accuracy dataset {path} holds no examples")
    return examples


def normalize_answer(text: str, special_tokens: list[str]) -> str:
    for token in special_tokens:
        text = text.replace(token, "")
    return " ".join(text.split())


def stop_sequences(examples: list[AccuracyExample], special_tokens: list[str]) -> tuple[str, ...]:
    """Stop where the gold answers end: at a special token that closes them (e.g. <|end|>), else a newline."""
    closers = {t for t in special_tokens if all(e.gold.rstrip().endswith(t) for e in examples)}
    return tuple(sorted(closers)) or ("\n",)


def summarize(samples: list[dict], pass_mark: float | None) -> dict:
    firsts = [s for s in samples if s["sample_index"] == 0]
    accuracy = sum(s["status"] == "passed" for s in firsts) / len(firsts) if firsts else None
    out = {"accuracy": accuracy, "examples": len(firsts)}
    if pass_mark is not None and accuracy is not None:
        out.update(pass_mark=pass_mark, pass_mark_met=accuracy >= pass_mark)
    return out
