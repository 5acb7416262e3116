"""Shared fixtures: tiny models of real architectures with a BPE tokenizer trained in-process on a few
standard-library packages, saved to disk and loaded back through plain `from_pretrained`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOKENIZER_PACKAGES = ("json", "collections", "email", "unittest")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a fresh clone has no shared data)")
    return SHARED


@pytest.fixture(scope="session")
def stdlib_dir() -> Path:
    from codetune.init_model import default_corpus

    return default_corpus()


@pytest.fixture(scope="session")
def tiny_tokenizer(stdlib_dir):
    from codetune.init_model import iter_corpus_texts, train_tokenizer

    texts = list(iter_corpus_texts([stdlib_dir / p for p in TOKENIZER_PACKAGES], 4_000_000))
    return train_tokenizer(texts, vocab_size=2048)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, tiny_tokenizer):
    """`factory(arch) -> Path` of a saved tiny model of that architecture; built once per session."""
    from codetune.init_model import init_model

    built: dict[str, Path] = {}

    def factory(arch: str = "starcoder2", size: str = "tiny") -> Path:
        key = f"{arch}-{size}"
        if key not in built:
            out = tmp_path_factory.mktemp(key)
            init_model(arch, size, [], out, tokenizer=tiny_tokenizer, seed=0)
            built[key] = out
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory) -> Path:
    """A tiny StarCoder2-architecture model directory (weights + tokenizer)."""
    return tiny_model_factory("starcoder2")
