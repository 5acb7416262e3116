"""Packing on hand-worked inputs: row layout, labels, position ids, whole pairs, the final partial row."""

from __future__ import annotations

import numpy as np
import pytest

from codetune.data.packing import IGNORE_INDEX, best_fit, pack, position_ids

EOS, PAD = 0, 9


def doc(*ids, masked=0):
    return np.array([*ids, EOS], dtype=np.int32), masked


def test_stream_is_cut_into_rows_and_positions_restart_per_document_and_row():
    # Documents of 3, 5 and 2 tokens (with EOS) = 10 tokens -> rows of 4: 4 + 4 + 2 real (+2 padding).
    out = pack([doc(1, 2), doc(3, 4, 5, 6), doc(7)], [], seq_len=4, pad_id=PAD, max_padding_fraction=None)
    assert out.input_ids.tolist() == [[1, 2, 0, 3], [4, 5, 6, 0], [7, 0, PAD, PAD]]
    assert out.position_ids.tolist() == [[0, 1, 2, 0], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert out.labels.tolist() == [[1, 2, 0, 3], [4, 5, 6, 0], [7, 0, IGNORE_INDEX, IGNORE_INDEX]]
    assert (out.tokens, out.padding, out.dropped_tokens, out.rows) == (10, 2, 0, 3)
    assert out.input_ids.dtype == out.labels.dtype == out.position_ids.dtype == np.int32


def test_final_partial_row_is_dropped_when_its_padding_is_too_much():
    docs = [doc(*range(1, 8))] * 3  # 24 tokens, seq_len 10 -> 2 full rows + 4 tokens
    padded = pack(docs, [], seq_len=10, pad_id=PAD, max_padding_fraction=None)
    assert padded.rows == 3 and padded.padding == 6 and padded.padding_fraction == pytest.approx(0.2)
    dropped = pack(docs, [], seq_len=10, pad_id=PAD, max_padding_fraction=0.02)
    assert dropped.rows == 2 and dropped.padding == 0 and dropped.dropped_tokens == 4 and dropped.tokens == 20
    # A lone partial row is kept (padded) whatever the padding: there is nothing else to train on.
    lone = pack([doc(1, 2)], [], seq_len=10, pad_id=PAD, max_padding_fraction=0.02)
    assert lone.rows == 1 and lone.padding == 7


def test_padding_stays_under_two_percent_on_many_documents():
    rng = np.random.default_rng(0)
    docs = [doc(*rng.integers(1, 100, size=int(n))) for n in rng.integers(1, 3000, size=400)]
    out = pack(docs, [], seq_len=512, pad_id=PAD, max_padding_fraction=0.02)
    assert out.padding_fraction < 0.02
    real = np.concatenate([d[0] for d in docs])
    # Order and content kept, nothing invented; only the dropped tail is missing.
    assert np.array_equal(out.input_ids.ravel()[: out.tokens], real[: out.tokens])
    assert out.tokens + out.dropped_tokens == len(real)


def test_pairs_stay_whole_and_mask_their_prompts():
    pairs = [doc(11, 12, 13, masked=2), doc(21, 22, masked=1), doc(31, 32, 33, 34, masked=3)]
    out = pack([doc(1, 2, 3, 4, 5, 6)], pairs, seq_len=6, pad_id=PAD, max_padding_fraction=None)
    rows = out.input_ids.tolist()
    # Pair lengths 4, 3, 5 (with EOS) in rows of 6: no two fit together, so three rows with 1, 2 and 3 free
    # slots; the 7-token code document fills those 6 slots and its last token opens a fourth row.
    for ids, _ in pairs:
        assert any(ids.tolist() == row[i : i + len(ids)] for row in rows for i in range(len(row)))
    labels = out.labels.ravel().tolist()
    assert labels.count(IGNORE_INDEX) == 2 + 1 + 3 + out.padding
    for masked_token in (11, 12, 21, 31, 32, 33):
        at = out.input_ids.ravel().tolist().index(masked_token)
        assert labels[at] == IGNORE_INDEX
    assert out.tokens == 4 + 3 + 5 + 7
    assert out.rows == 4 and out.padding == 5
    assert rows == [[31, 32, 33, 34, 0, 1], [11, 12, 13, 0, 2, 3], [21, 22, 0, 4, 5, 6], [0, PAD, PAD, PAD, PAD, PAD]]
    # Each pair is its own segment, and so is the code piece after it (it must not attend to the pair).
    assert out.position_ids.tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]


def test_pair_longer_than_a_row_is_refused():
    with pytest.raises(ValueError):
        pack([], [doc(1, 2, 3, 4, 5, 6, 7)], seq_len=4, pad_id=PAD)


def test_best_fit_decreasing():
    assert best_fit([6, 4, 3, 3, 2, 2], capacity=10) == [[0, 1], [2, 3, 4, 5]]
    assert best_fit([], capacity=4) == []


def test_position_ids_count_from_each_start():
    starts = np.array([1, 0, 0, 1, 0, 1, 1, 0], dtype=bool)
    assert position_ids(starts).tolist() == [0, 1, 2, 0, 1, 0, 0, 1]


def test_empty_input_gives_no_rows():
    out = pack([], [], seq_len=8, pad_id=PAD)
    assert out.rows == 0 and out.tokens == 0 and out.padding_fraction == 0.0
