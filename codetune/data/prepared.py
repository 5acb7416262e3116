"""The prepared dataset as other flows see it: where the artifacts live, the report written beside
them, the hash that tells whether they are stale, and `load_prepared` to read them back.

A report exists only once the splits beside it are fully written (prepare deletes it first and
writes it last), so its presence is the completeness check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from codetune.data.filters import REASONS
from codetune.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from codetune.config import Config, DataConfig

DATA_DIR = "data"
REPORT_FILE = "prepare_report.json"
VALID_FILES = "valid_files.jsonl"
# Settings that change nothing in the output (worker count) stay out of the hash.
_HASH_EXCLUDE = {"num_proc"}


def data_config_hash(data: DataConfig, tokenizer_fingerprint: str) -> str:
    """Equal iff the same sources, settings and tokenizer were used: compare with the report's
    `config_hash` to decide whether a prepared dataset is stale (source file contents are not hashed)."""
    payload = {"data": data.model_dump(mode="json", exclude=_HASH_EXCLUDE), "tokenizer": tokenizer_fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_prepared(run_dir: str | Path):
    """(train Dataset, valid Dataset, report dict) of a prepared run; DataError when absent or incomplete."""
    data_dir = Path(run_dir) / DATA_DIR
    report_path = data_dir / REPORT_FILE
    if not report_path.is_file():
        raise DataError(f"no prepared dataset in {data_dir} (prepare_report.json missing); "
                        f"run `codetune prepare CONFIG` first")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{report_path} is not valid JSON ({exc.msg}); run `codetune prepare` again") from None
    import datasets

    splits = []
    for name in ("train", "valid"):
        path = data_dir / name
        if not (path / "dataset_info.json").is_file():
            raise DataError(f"prepared split {path} is missing; run `codetune prepare` again")
        splits.append(datasets.load_from_disk(str(path)))
    return splits[0], splits[1], report


def build_report(cfg: Config, tokenizer, fingerprint: str, tally, warnings, index, splits: dict,
                 fim_applied: int, num_proc: int, time_s: float, timings: dict[str, float]) -> dict:
    """The prepare_report.json payload. `splits` maps split -> (Packed, tokens by language, files)."""
    from codetune.data.sources import describe

    data = cfg.data
    train, valid = splits["train"][0], splits["valid"][0]
    dropped = {reason: tally.dropped.get(reason, 0) for reason in REASONS}
    sources = []
    for i, src in enumerate(data.sources):
        counts = tally.per_source.get(i, {})
        sources.append({
            "source": describe(src), "seen": counts.get("seen", 0), "kept": counts.get("kept", 0),
            "dropped": {r: n for r, n in counts.items() if r not in ("seen", "kept") and n},
        })
    return {
        "tokenizer": {
            "name_or_path": cfg.model.tokenizer or cfg.model.name_or_path,
            "fingerprint": fingerprint,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        "seq_len": data.seq_len,
        "config_hash": data_config_hash(data, fingerprint),
        "sources": sources,
        "files": {"seen": tally.seen, "kept": tally.kept, "dropped": dropped},
        "bytes": {"seen": tally.bytes_seen, "kept": tally.bytes_kept},
        "languages": dict(sorted(tally.languages.items())),
        "split": {name: {"files": files} for name, (_, _, files) in splits.items()},
        "tokens": {name: dict(sorted(tokens.items())) for name, (_, tokens, _) in splits.items()},
        "tokens_total": {name: packed.tokens for name, (packed, _, _) in splits.items()},
        "sequences": {"train": train.rows, "valid": valid.rows},
        "padding_fraction": round(train.padding_fraction, 6),
        "padding_fraction_valid": round(valid.padding_fraction, 6),
        "padding_tokens": {"train": train.padding, "valid": valid.padding},
        "dropped_tail_tokens": {"train": train.dropped_tokens, "valid": valid.dropped_tokens},
        "position_ids": "restart at 0 at each document start and each row start; padding continues the count",
        "dedup": {
            "exact_dropped": dropped["exact_duplicate"], "near_dropped": dropped["near_duplicate"],
            "near_clusters": tally.near_clusters, "threshold": data.dedup.threshold,
            "num_perm": data.dedup.num_perm, "shingle_size": data.dedup.shingle_size,
        },
        "decontamination": {"dropped": dropped["decontaminated"], "ngram": index.n,
                            "benchmarks": dict(index.benchmarks)},
        "fim": {"rate": data.fim_rate, "spm_rate": data.fim_spm_rate, "applied": fim_applied,
                "applies_to": "training split code files"},
        "warnings": {"count": warnings.count, "first": warnings.messages},
        "num_proc": num_proc,
        "time_s": round(time_s, 3),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
