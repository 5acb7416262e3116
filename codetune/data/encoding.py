"""Tokenize kept documents with the model's tokenizer, in worker processes, applying FIM on the way.

Every document becomes (token ids ending in EOS, number of leading tokens whose loss is masked):
- code: the text, or its FIM arrangement (sentinel ids between separately tokenized pieces);
- prompt/completion pair: prompt ids (masked) + completion ids, never FIM-transformed.
Literal special-token text inside code ("<|endoftext|>" in a tokenizer's own source) is tokenized
as ordinary text (`split_special_tokens=True`), so data cannot inject control tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from codetune.data import fim

_STATE: dict = {}


@dataclass(frozen=True)
class EncodeSettings:
    eos_id: int
    fim_ids: dict[str, int] | None  # sentinel -> id; None when FIM is off
    fim_rate: float
    fim_spm_rate: float
    seed: int


@dataclass(frozen=True)
class Job:
    key: str  # stable document key: seeds the FIM draw
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None
    fim: bool = False  # eligible for FIM (training split code only)


def init_worker(tokenizer, settings: EncodeSettings, parallel: bool = False) -> None:
    # One process per core already; the tokenizer's own thread pool would only oversubscribe.
    if not parallel:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _STATE["settings"] = settings
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: go through its own call
        _STATE["encode"] = lambda texts: tokenizer(
            texts, add_special_tokens=False, split_special_tokens=True, return_attention_mask=False
        )["input_ids"]
        return
    from tokenizers import Tokenizer

    # A private copy of the Rust tokenizer: special-token text in the data stays text, no truncation,
    # and the caller's tokenizer is left untouched when this runs inline.
    backend = Tokenizer.from_str(backend.to_str())
    backend.encode_special_tokens = True
    backend.no_truncation()
    backend.no_padding()
    _STATE["encode"] = lambda texts: [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def job_pieces(job: Job, settings: EncodeSettings) -> tuple[list[str], str | None, int]:
    """(pieces, FIM mode or None, number of leading pieces whose tokens are masked)."""
    if job.prompt is not None:
        return [job.prompt, job.completion], None, 1
    if job.fim and settings.fim_ids is not None:
        parts, mode = fim.transform(job.text, settings.seed, job.key, settings.fim_rate, settings.fim_spm_rate)
        return parts, mode, 0
    return [job.text], None, 0


def encode_batch(jobs: list[Job]) -> list[tuple[np.ndarray, int, bool]]:
    """(ids ending in EOS, masked prefix length, FIM applied) for each job."""
    settings = _STATE["settings"]
    layouts, texts = [], []
    for job in jobs:
        parts, mode, n_masked = job_pieces(job, settings)
        sentinel_at = fim.SENTINEL_POSITIONS[mode]
        layouts.append((parts, sentinel_at, n_masked))
        texts.extend(p for i, p in enumerate(parts) if i not in sentinel_at)
    encoded = _STATE["encode"](texts) if texts else []
    out, at = [], 0
    for parts, sentinel_at, n_masked in layouts:
        ids: list[int] = []
        masked = 0
        for i, part in enumerate(parts):
            if i in sentinel_at:
                ids.append(settings.fim_ids[part])
                continue
            ids.extend(encoded[at])
            at += 1
            if i < n_masked:
                masked = len(ids)
        ids.append(settings.eos_id)
        out.append((np.asarray(ids, dtype=np.int32), masked, bool(sentinel_at)))
    return out
