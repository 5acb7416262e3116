"""Turn each configured source into a stream of `Item`s, one per file or row, before any filtering.

A source is a local directory or zip/tar archive (through `files.iter_local`), a JSONL/JSON/Parquet
file of rows (a text field, or prompt/completion fields), or a Hugging Face Hub dataset (real
`datasets.load_dataset`, streaming when asked). Items that cannot be used at all — an unreadable file,
a malformed JSONL line, a row without the configured field, a file in an unwanted language — come out
with a `reason` set, so they are counted like any filtered file instead of crashing the run.
"""

from __future__ import annotations

import glob
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from codetune.config import SourceConfig
from codetune.data.extensions import language_of, unknown_languages
from codetune.data.files import iter_local
from codetune.errors import ConfigError, DataError
from codetune.prompts import training_pair

ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
UNKNOWN = "unknown"
MAX_WARNINGS = 20


@dataclass
class Item:
    source: int  # index in data.sources
    path: str
    language: str
    data: bytes | None = None  # raw bytes of a local file, decoded by the filters
    text: str | None = None  # a row's text field (already decoded)
    prompt: str | None = None  # prompt/completion pair; the loss is masked on the prompt
    completion: str | None = None
    reason: str | None = None  # dropped before filtering (see filters.SOURCE_REASONS)

    @property
    def nbytes(self) -> int:
        if self.data is not None:
            return len(self.data)
        return sum(len(s.encode("utf-8")) for s in (self.text, self.prompt, self.completion) if s)


class Warnings:
    """Per-line problems (malformed JSON, missing fields): the first few verbatim, the rest counted."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_WARNINGS:
            self.messages.append(message)


def describe(src: SourceConfig) -> str:
    if src.hub is not None:
        parts = [src.hub] + [f"{k}={v}" for k, v in (("subset", src.subset), ("data_dir", src.data_dir)) if v]
        return " ".join(parts + [f"split={src.split}"])
    return str(src.path)


def check_sources(sources: list[SourceConfig]) -> None:
    """Fail before any work on things the config can already tell: no sources, unknown languages."""
    if not sources:
        raise ConfigError("config error: `data.sources` is empty; name at least one directory, archive or dataset")
    for i, src in enumerate(sources):
        bad = unknown_languages(src.languages or [])
        if bad:
            raise ConfigError(f"config error: `data.sources[{i}].languages`: unknown language {bad[0]!r} "
                              f"(names follow the extension table in codetune/data/extensions.py)")


def is_row_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ROW_SUFFIXES)


def resolve_paths(pattern: str) -> list[Path]:
    """A path or a glob; a glob that matches nothing and a missing path are both errors."""
    expanded = str(Path(pattern).expanduser())
    if glob.has_magic(expanded):
        matches = sorted(Path(p) for p in glob.glob(expanded, recursive=True))
        if not matches:
            raise DataError(f"source pattern matches nothing: {pattern}")
        return matches
    path = Path(expanded)
    if not path.exists():
        raise DataError(f"source not found: {pattern}")
    return [path]


def iter_source(index: int, src: SourceConfig, max_file_bytes: int, warnings: Warnings) -> Iterator[Item]:
    """Every file or row of one source, at most `src.max_files` of them."""
    if src.hub is not None:
        items = _rows_to_items(index, src, _hub_rows(src), describe(src), warnings)
    else:
        items = _local_items(index, src, max_file_bytes, warnings)
    for n, item in enumerate(items, 1):
        yield item
        if src.max_files is not None and n >= src.max_files:
            return


def _local_items(index: int, src: SourceConfig, max_file_bytes: int, warnings: Warnings) -> Iterator[Item]:
    for path in resolve_paths(src.path):
        if is_row_file(path):
            yield from _rows_to_items(index, src, _file_rows(path), str(path), warnings)
            continue
        for raw in iter_local(path, max_file_bytes):
            language = language_of(raw.path)
            item = Item(index, raw.path, language or UNKNOWN, data=raw.data)
            if raw.unreadable:
                item.reason = "unreadable"
            elif language is None or (src.languages and language not in src.languages):
                item.reason = "language"
            yield item


def _file_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line or row number, row, error) for JSONL/JSON/Parquet; a malformed line gives (n, None, why)."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _parquet_rows(path)
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            head = fh.read(1 << 16).lstrip()
            fh.seek(0)
            if head.startswith("["):  # a JSON array of rows rather than JSON Lines
                try:
                    rows = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
                for n, row in enumerate(rows, 1):
                    yield (n, row, None) if isinstance(row, dict) else (n, None, "not a JSON object")
                return
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, None, f"malformed JSON ({exc.msg})"
                    continue
                yield (n, row, None) if isinstance(row, dict) else (n, None, "not a JSON object")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        n = 0
        for batch in reader.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row, None
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read Parquet file {path}: {exc}") from None


def _hub_rows(src: SourceConfig) -> Iterator[tuple[int, dict | None, str | None]]:
    """Rows of a Hub dataset (or a local dataset directory/script, which `load_dataset` also accepts)."""
    import datasets

    try:
        ds = datasets.load_dataset(
            src.hub, src.subset, data_dir=src.data_dir, split=src.split, streaming=src.streaming
        )
    except Exception as exc:  # hub errors, offline mode, bad split: all user-facing
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"cannot load dataset {describe(src)}: {exc.__class__.__name__}: {first} "
            f"(offline? set HF_DATASETS_OFFLINE=0 with network access, or point `path` at local files)"
        ) from None
    columns = getattr(ds, "column_names", None)
    wanted = [src.prompt_field, src.completion_field] if src.prompt_field else [src.text_field]
    missing = [f for f in wanted if columns is not None and f not in columns]
    if missing:
        raise DataError(f"dataset {describe(src)} has no field {missing[0]!r}; its fields are {', '.join(columns)}")
    for n, row in enumerate(ds, 1):
        yield n, row, None


def _rows_to_items(index: int, src: SourceConfig, rows, where: str, warnings: Warnings) -> Iterator[Item]:
    default_language = src.languages[0] if src.languages and len(src.languages) == 1 else UNKNOWN
    for n, row, error in rows:
        name = f"{where}:{n}"
        if error is not None:
            warnings.add(f"{where} line {n}: {error}")
            yield Item(index, name, default_language, reason="malformed")
            continue
        path = row.get(src.path_field) if src.path_field else None
        if isinstance(path, str) and path:
            language = language_of(path)
            if language is None or (src.languages and language not in src.languages):
                yield Item(index, path, language or UNKNOWN, reason="language")
                continue
        else:
            path, language = name, default_language
        if src.prompt_field is not None:
            prompt, completion = row.get(src.prompt_field), row.get(src.completion_field)
            if not isinstance(prompt, str) or not isinstance(completion, str):
                field = src.prompt_field if not isinstance(prompt, str) else src.completion_field
                warnings.add(f"{where} line {n}: no text field {field!r}")
                yield Item(index, path, language, reason="missing_field")
                continue
            try:
                prompt, completion = training_pair(src.prompt_template, row, src.prompt_field, src.completion_field)
            except (KeyError, ValueError, IndexError) as exc:
                warnings.add(f"{where} line {n}: prompt_template cannot be filled ({exc})")
                yield Item(index, path, language, reason="missing_field")
                continue
            yield Item(index, path, language, prompt=prompt, completion=completion)
            continue
        text = row.get(src.text_field)
        if not isinstance(text, str):
            warnings.add(f"{where} line {n}: no text field {src.text_field!r}")
            yield Item(index, path, language, reason="missing_field")
            continue
        yield Item(index, path, language, text=text)
