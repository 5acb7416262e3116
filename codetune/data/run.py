"""`codetune prepare`: sources -> filtered, deduplicated, decontaminated documents -> train/valid split
by file -> tokens (FIM on training code) -> packed `seq_len` rows on disk, plus a report.

On-disk contract (read by the train and evaluate flows, through `load_prepared`):
    <output_dir>/data/train/, valid/    `datasets.Dataset.save_to_disk`; int32 columns input_ids, labels,
                                        position_ids, each exactly seq_len long (see packing.py)
    <output_dir>/data/valid_files.jsonl the held-out raw documents {"path", "language", "text"}
                                        (pairs also carry "prompt" and "completion")
    <output_dir>/data/prepare_report.json  counts, tokenizer fingerprint, config_hash (staleness check)
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codetune.config import Config, write_resolved
from codetune.data.decontaminate import build_index
from codetune.data.encoding import EncodeSettings, Job, encode_batch, init_worker
from codetune.data.fim import sentinel_ids
from codetune.data.packing import Packed, pack
from codetune.data.prepared import (
    DATA_DIR,
    REPORT_FILE,
    VALID_FILES,
    build_report,
    data_config_hash,
    load_prepared,
    write_json_atomic,
)
from codetune.data.scan import Doc, scan
from codetune.data.sources import check_sources
from codetune.data.workers import batched, default_num_proc, ordered_map
from codetune.errors import DataError

__all__ = ["run", "load_prepared", "PrepareResult", "split_by_file", "data_config_hash"]

MAX_PADDING_FRACTION = 0.02
ENCODE_BATCH = 128


@dataclass
class PrepareResult:
    data_dir: Path
    report: dict

    def summary(self) -> str:
        r = self.report
        by_files = sorted(r["languages"].items(), key=lambda kv: -kv[1]["files"])
        langs = ", ".join(f"{k} {v['files']:,}" for k, v in by_files)
        return (
            f"kept {r['files']['kept']:,} of {r['files']['seen']:,} files ({langs}); "
            f"{r['sequences']['train']:,} train + {r['sequences']['valid']:,} valid sequences of {r['seq_len']} "
            f"tokens ({r['tokens_total']['train']:,} train tokens, padding {100 * r['padding_fraction']:.2f}%) "
            f"in {r['time_s']:.1f} s -> {self.data_dir}"
        )


def split_by_file(languages: list[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of files held out for validation: `fraction` of each language's files (rounded, and
    at least one for a language with two or more files, so per-language perplexity has data)."""
    valid = np.zeros(len(languages), dtype=bool)
    if fraction <= 0:
        return valid
    by_language: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        by_language.setdefault(lang, []).append(i)
    for lang, idx in sorted(by_language.items()):
        if len(idx) < 2:
            continue
        n = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        rng = np.random.default_rng([seed & 0xFFFFFFFF, *lang.encode("utf-8")])
        valid[rng.choice(np.asarray(idx), size=n, replace=False)] = True
    return valid


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


def _jobs(docs: list[Doc], fim: bool, release: bool):
    for d in docs:
        yield Job(f"{d.source}:{d.path}", text=d.text, prompt=d.prompt, completion=d.completion, fim=fim)
        if release:  # the tokens are all that is needed of a training file: free its text early
            d.text = None


def _encode(docs: list[Doc], fim: bool, tokenizer, settings: EncodeSettings, num_proc: int, progress, label: str):
    task = progress.add_task(f"tokenizing {label}", total=len(docs))
    jobs = _jobs(docs, fim, release=fim)
    out = []
    for encoded in ordered_map(encode_batch, batched(jobs, ENCODE_BATCH), num_proc, init_worker,
                               (tokenizer, settings, num_proc <= 1)):
        out.extend(encoded)
        progress.update(task, advance=len(encoded))
    return out


def _pack_split(docs: list[Doc], encoded, seq_len: int, pad_id: int, max_padding: float | None, tally):
    """Pack one split; pairs longer than seq_len are dropped (and counted) since they cannot stay whole."""
    stream, whole, tokens = [], [], Counter()
    for doc, (ids, masked, _) in zip(docs, encoded, strict=True):
        if doc.is_pair:
            if len(ids) > seq_len:
                tally.unkeep(doc, "pair_too_long")
                continue
            whole.append((ids, masked))
        else:
            stream.append((ids, masked))
        tokens[doc.language] += len(ids)
    return pack(stream, whole, seq_len, pad_id, max_padding), dict(tokens)


def _save(packed: Packed, path: Path) -> None:
    import datasets
    import pyarrow as pa

    rows, seq_len = packed.input_ids.shape
    chunks = []
    for lo in range(0, max(rows, 1), 65536):  # int32 list offsets: keep each chunk far below 2**31 values
        hi = min(rows, lo + 65536)
        offsets = pa.array(np.arange(0, (hi - lo) * seq_len + 1, seq_len, dtype=np.int32))
        chunks.append(pa.table({
            name: pa.ListArray.from_arrays(offsets, pa.array(getattr(packed, name)[lo:hi].ravel()))
            for name in ("input_ids", "labels", "position_ids")
        }))
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.disable_progress_bars()
    try:
        datasets.Dataset(pa.concat_tables(chunks)).save_to_disk(str(tmp))
    finally:
        datasets.enable_progress_bars()
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _write_valid_files(docs: list[Doc], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for d in docs:
            row = {"path": d.path, "language": d.language}
            if d.is_pair:
                row.update(text=d.prompt + d.completion, prompt=d.prompt, completion=d.completion)
            else:
                row["text"] = d.text
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def run(cfg: Config) -> PrepareResult:
    from codetune.modeling import load_tokenizer, tokenizer_fingerprint

    write_resolved(cfg)
    start = time.perf_counter()
    data = cfg.data
    check_sources(data.sources)
    tokenizer = load_tokenizer(cfg.model)
    if tokenizer.eos_token_id is None:
        raise DataError(f"tokenizer {cfg.model.tokenizer or cfg.model.name_or_path} has no EOS token to "
                        f"separate documents; add one with model.special_tokens and a tokenizer that sets it")
    fim_ids = sentinel_ids(tokenizer) if data.fim_rate > 0 else None
    fingerprint = tokenizer_fingerprint(tokenizer)
    index = build_index(data.decontaminate)
    num_proc = data.num_proc or default_num_proc()
    out = cfg.run_dir / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).unlink(missing_ok=True)  # a report present means the artifacts beside it are whole

    settings = EncodeSettings(tokenizer.eos_token_id, fim_ids, data.fim_rate, data.fim_spm_rate, data.seed)
    timings = {"setup": time.perf_counter() - start}
    with _progress() as progress:
        mark = time.perf_counter()
        docs, tally, warnings = scan(data, index, num_proc, progress)
        timings["read_filter_dedup"] = time.perf_counter() - mark
        is_valid = split_by_file([d.language for d in docs], data.valid_fraction, data.seed)
        train_docs = [d for d, v in zip(docs, is_valid, strict=True) if not v]
        valid_docs = [d for d, v in zip(docs, is_valid, strict=True) if v]
        del docs
        mark = time.perf_counter()
        enc_train = _encode(train_docs, True, tokenizer, settings, num_proc, progress, "train")
        enc_valid = _encode(valid_docs, False, tokenizer, settings, num_proc, progress, "valid")
        timings["tokenize"] = time.perf_counter() - mark
        fim_applied = sum(1 for _, _, applied in enc_train if applied)
        mark = time.perf_counter()
        task = progress.add_task("packing and writing", total=2)
        train, train_tokens = _pack_split(train_docs, enc_train, data.seq_len, tokenizer.pad_token_id,
                                          MAX_PADDING_FRACTION, tally)
        valid, valid_tokens = _pack_split(valid_docs, enc_valid, data.seq_len, tokenizer.pad_token_id, None, tally)
        del enc_train, enc_valid  # the packed arrays hold the tokens now
        if train.rows == 0:
            raise DataError("nothing left to train on after filtering and splitting; add sources or lower "
                            "data.valid_fraction")
        _save(train, out / "train")
        progress.update(task, advance=1)
        _save(valid, out / "valid")
        _write_valid_files(valid_docs, out / VALID_FILES)
        progress.update(task, advance=1)
        timings["pack_write"] = time.perf_counter() - mark

    report = build_report(
        cfg, tokenizer, fingerprint, tally, warnings, index,
        splits={"train": (train, train_tokens, len(train_docs)), "valid": (valid, valid_tokens, len(valid_docs))},
        fim_applied=fim_applied, num_proc=num_proc,
        time_s=time.perf_counter() - start, timings=timings,
    )
    write_json_atomic(out / REPORT_FILE, report)
    if warnings.count:
        from rich.console import Console

        err = Console(stderr=True)
        for message in warnings.messages[:5]:
            err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
        if warnings.count > 5:
            err.print(f"warning: {warnings.count - 5} more (see {out / REPORT_FILE})", markup=False, soft_wrap=True)
    return PrepareResult(out, report)
