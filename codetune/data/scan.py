"""The first pass of `prepare`: read every source, filter, decontaminate and deduplicate, and count
every file seen, kept and dropped (by reason, per source and in total).

Reading happens in the main process (archives and directories are sequential anyway); decoding,
the quality filters, the n-gram check and the MinHash signatures run in worker processes; exact and
near dedup decide in the main process, in file order, so the first copy is the one kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from codetune.config import DataConfig
from codetune.data import filters
from codetune.data.decontaminate import NgramIndex, contains_ngram
from codetune.data.dedup import ExactDedup, NearDedup, Signer, content_hash
from codetune.data.shingles import split_words, word_hashes
from codetune.data.sources import Item, Warnings, describe, iter_source
from codetune.data.workers import batched, ordered_map
from codetune.errors import DataError

BATCH = 64


@dataclass
class Doc:
    source: int
    path: str
    language: str
    nbytes: int
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None
    reason: str | None = None
    digest: bytes | None = None
    signature: np.ndarray | None = None
    contaminated: bool = False

    @property
    def is_pair(self) -> bool:
        return self.prompt is not None


@dataclass
class Tally:
    """Counts for the report: files and bytes seen/kept, drops by reason, per source and language."""

    seen: int = 0
    kept: int = 0
    bytes_seen: int = 0
    bytes_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    per_source: dict[int, Counter] = field(default_factory=dict)
    languages: dict[str, dict[str, int]] = field(default_factory=dict)
    near_clusters: int = 0

    def saw(self, source: int, nbytes: int) -> None:
        self.seen += 1
        self.bytes_seen += nbytes
        self.per_source.setdefault(source, Counter())["seen"] += 1

    def drop(self, source: int, reason: str) -> None:
        self.dropped[reason] += 1
        self.per_source[source][reason] += 1

    def keep(self, doc: Doc) -> None:
        self.kept += 1
        self.bytes_kept += doc.nbytes
        self.per_source[doc.source]["kept"] += 1
        lang = self.languages.setdefault(doc.language, {"files": 0, "bytes": 0})
        lang["files"] += 1
        lang["bytes"] += doc.nbytes

    def unkeep(self, doc: Doc, reason: str) -> None:
        """Take back a kept document found unusable later (a pair too long for one sequence)."""
        self.kept -= 1
        self.bytes_kept -= doc.nbytes
        self.per_source[doc.source]["kept"] -= 1
        lang = self.languages[doc.language]
        lang["files"] -= 1
        lang["bytes"] -= doc.nbytes
        if not lang["files"]:
            del self.languages[doc.language]
        self.drop(doc.source, reason)


# Worker state, set once per process by `_init`.
_STATE: dict = {}


def _init(cfg: DataConfig, index: NgramIndex) -> None:
    _STATE["cfg"] = cfg
    _STATE["index"] = index
    dd = cfg.dedup
    _STATE["signer"] = Signer(dd.num_perm, dd.shingle_size, seed=cfg.seed + 1) if dd.near else None


def _examine(batch: list[Item]) -> list[Doc]:
    cfg: DataConfig = _STATE["cfg"]
    signer: Signer | None = _STATE["signer"]
    out = []
    for item in batch:
        doc = Doc(item.source, item.path, item.language, item.nbytes, prompt=item.prompt,
                  completion=item.completion)
        if item.prompt is not None:
            doc.reason = filters.pair_reason(item.prompt, item.completion, cfg.filters)
            body = item.prompt + "\0" + item.completion
        elif item.data is not None:
            doc.text, doc.reason = filters.check_file(item.data, item.path, cfg.filters)
            body = doc.text
        else:
            doc.text, doc.reason = item.text, filters.check_text(item.text, item.path, cfg.filters)
            body = doc.text
        if doc.reason is None:
            doc.text = doc.text if not doc.is_pair else None
            words = split_words(body)
            hashes = word_hashes(words)
            doc.contaminated = contains_ngram(words, hashes, _STATE["index"])
            doc.digest = content_hash(body)
            # Pairs are often templated (NsPM, text-to-SQL): near dedup would erase them, exact only.
            if signer is not None and not doc.is_pair and not doc.contaminated:
                doc.signature = signer.signature_of_words(hashes)
        else:
            doc.text = None
        out.append(doc)
    return out


def scan(cfg: DataConfig, index: NgramIndex, num_proc: int, progress=None) -> tuple[list[Doc], Tally, Warnings]:
    """Every kept document (text, no signature) in source order, with the counts and warnings."""
    tally, warnings = Tally(), Warnings()
    exact = ExactDedup() if cfg.dedup.exact else None
    near = NearDedup(Signer(cfg.dedup.num_perm, cfg.dedup.shingle_size, seed=cfg.seed + 1),
                     cfg.dedup.threshold) if cfg.dedup.near else None
    task = progress.add_task("reading and filtering files", total=None) if progress else None

    def to_examine():
        for i, src in enumerate(cfg.sources):
            tally.per_source.setdefault(i, Counter())
            for item in iter_source(i, src, cfg.filters.max_file_bytes, warnings):
                tally.saw(i, item.nbytes)
                if item.reason is not None:
                    tally.drop(i, item.reason)
                    continue
                yield item

    kept: list[Doc] = []
    for docs in ordered_map(_examine, batched(to_examine(), BATCH), num_proc, _init, (cfg, index)):
        for doc in docs:
            if doc.reason is None and doc.contaminated:
                doc.reason = "decontaminated"
            if doc.reason is None and exact is not None and exact.check(doc.digest):
                doc.reason = "exact_duplicate"
            if doc.reason is None and doc.signature is not None:
                if near.check(f"{doc.source}:{len(kept)}", doc.signature) is not None:
                    doc.reason = "near_duplicate"
            doc.signature = None
            if doc.reason is not None:
                tally.drop(doc.source, doc.reason)
                continue
            tally.keep(doc)
            kept.append(doc)
        if progress:
            progress.update(task, completed=tally.seen,
                            description=f"reading and filtering files ({tally.kept:,} kept of {tally.seen:,})")
    tally.near_clusters = near.clusters if near else 0
    if progress:
        progress.update(task, total=tally.seen, completed=tally.seen)
    check_nonempty(cfg, tally)
    return kept, tally, warnings


def check_nonempty(cfg: DataConfig, tally: Tally) -> None:
    """A source that yields nothing is an error naming what dropped its files."""
    for i, counts in sorted(tally.per_source.items()):
        src = describe(cfg.sources[i])
        if counts["seen"] == 0:
            raise DataError(f"source {src} contains no files or rows")
        if counts["kept"] == 0:
            reasons = ", ".join(f"{r} ({n})" for r, n in counts.most_common() if r not in ("seen", "kept"))
            hint = ""
            if counts["language"] and cfg.sources[i].languages:
                hint = f"; only languages {cfg.sources[i].languages} were asked for"
            raise DataError(f"source {src} yields nothing after filtering: all {counts['seen']} dropped by "
                            f"{reasons}{hint}")
