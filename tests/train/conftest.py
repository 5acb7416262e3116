"""Training fixtures: a small packed dataset in the prepared-data format (`data/train`, `data/valid`,
`prepare_report.json`) tokenized by the tiny model's tokenizer, and `make_cfg` for a run on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SEQ_LEN = 64
DOC_PACKAGE = "json"  # stdlib package whose files are the training documents


def pack(docs: list[list[int]], seq_len: int, eos_id: int, pad_id: int) -> list[dict]:
    """Greedy packing of EOS-terminated documents into rows of exactly seq_len; positions restart per
    document, padding is labelled -100."""
    rows, ids, pos = [], [], []
    for doc in docs:
        for start in range(0, len(doc), seq_len):
            piece = doc[start : start + seq_len - 1] + [eos_id]
            if len(ids) + len(piece) > seq_len:
                rows.append((ids, pos))
                ids, pos = [], []
            ids += piece
            pos += list(range(len(piece)))
    if ids:
        rows.append((ids, pos))
    out = []
    for ids, pos in rows:
        pad = seq_len - len(ids)
        out.append(
            {
                "input_ids": ids + [pad_id] * pad,
                "labels": ids + [-100] * pad,
                "position_ids": pos + list(range(pad)),
            }
        )
    return out


def write_prepared(
    data_dir: Path,
    tokenizer,
    fingerprint: str,
    texts: list[str],
    seq_len: int = SEQ_LEN,
    n_valid_docs: int = 2,
) -> Path:
    from datasets import Dataset, Features, Sequence, Value

    docs = [tokenizer(t)["input_ids"] for t in texts]
    features = Features({k: Sequence(Value("int32")) for k in ("input_ids", "labels", "position_ids")})
    splits = {"valid": docs[:n_valid_docs], "train": docs[n_valid_docs:]}
    tokens = {}
    for name, split_docs in splits.items():
        rows = pack(split_docs, seq_len, tokenizer.eos_token_id, tokenizer.pad_token_id)
        Dataset.from_list(rows, features=features).save_to_disk(str(data_dir / name))
        tokens[name] = len(rows) * seq_len
    report = {"tokenizer": {"fingerprint": fingerprint}, "seq_len": seq_len, "tokens_total": tokens}
    (data_dir / "prepare_report.json").write_text(json.dumps(report), encoding="utf-8")
    return data_dir


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two spinning threads
    made each step 10-30x slower. Restored afterwards for the rest of the suite."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory, tiny_model_dir, stdlib_dir) -> Path:
    """~60 training rows and a few validation rows of 64 tokens from the stdlib `json` package."""
    from codetune.config import ModelConfig
    from codetune.modeling import load_tokenizer, tokenizer_fingerprint

    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    files = sorted((stdlib_dir / DOC_PACKAGE).glob("*.py"))
    texts = [f.read_text(encoding="utf-8")[:1500] for f in files] * 2
    out = tmp_path_factory.mktemp("prepared") / "data"
    return write_prepared(out, tokenizer, tokenizer_fingerprint(tokenizer), texts)


def build_cfg(out: Path, model_dir: Path, prepared: Path | None, *overrides: str):
    """Config for a run in `out` on the tiny model; copies the prepared data in when given."""
    from codetune.config import load_config

    if prepared is not None and not (out / "data").exists():
        shutil.copytree(prepared, out / "data")
    base = {
        "name": out.name,
        "output_dir": str(out),
        "model": {"name_or_path": str(model_dir)},
        "data": {"seq_len": SEQ_LEN},
        "method": {"kind": "full"},
        "train": {
            "micro_batch": 2,
            "max_steps": 6,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": 3,
            "warmup_steps": 1,
            "seed": 0,
        },
    }
    return load_config(None, list(overrides), base=base)


@pytest.fixture
def make_cfg(tmp_path, tiny_model_dir, prepared_data):
    """`make_cfg(*overrides, data=True, run_name="run")` -> Config for a run under tmp_path."""

    def make(*overrides: str, data: bool = True, run_name: str = "run"):
        return build_cfg(tmp_path / run_name, tiny_model_dir, prepared_data if data else None, *overrides)

    return make
