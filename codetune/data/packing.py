"""Pack tokenized documents into rows of exactly `seq_len` tokens with almost no padding.

Each document arrives already ending in EOS. Code documents form one stream that is cut into rows,
so a long document continues in the next row. Prompt/completion pairs must stay whole (a completion
cut off from its prompt teaches the wrong thing), so they are placed first, best-fit decreasing, and
the code stream then fills the space they leave.

Columns, all int32:
- `input_ids`: the tokens; padding (only in the last row of a split, or in pair rows when the code
  stream runs out) is `pad_id`.
- `labels`: equal to `input_ids` (the model shifts internally), -100 on padding and on prompt tokens.
- `position_ids`: 0 at each document start and at each row start (a document continued from the
  previous row restarts at 0, which keeps positions below `seq_len` for learned position embeddings,
  and so does a code piece placed after pairs); padding continues the count of the segment before it.

The last, partial row of a split is padded; for the training split it is dropped instead when its
padding would exceed `max_padding_fraction` of the split (and it is not the only row).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass
class Packed:
    input_ids: np.ndarray  # (rows, seq_len) int32
    labels: np.ndarray
    position_ids: np.ndarray
    tokens: int  # real tokens kept
    padding: int
    dropped_tokens: int  # tokens of a final partial row that was dropped

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def padding_fraction(self) -> float:
        total = self.input_ids.size
        return self.padding / total if total else 0.0


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) from best-fit decreasing: each item, longest first, goes into the
    fullest bin it fits in. Every length must be <= capacity."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, bin index), sorted
    for i in order:
        need = lengths[i]
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if space - need > 0:
            bisect.insort(free, (space - need, b))
    return bins


def position_ids(starts: np.ndarray) -> np.ndarray:
    """Positions counting up from the last True in `starts` (a flat bool array); index 0 must be True."""
    dtype = np.int32 if len(starts) < 2**31 else np.int64  # int32 halves the peak memory of this step
    idx = np.arange(len(starts), dtype=dtype)
    last = np.where(starts, idx, 0)
    np.maximum.accumulate(last, out=last)
    idx -= last
    return idx.astype(np.int32, copy=False)


def pack(
    stream: list[tuple[np.ndarray, int]],
    whole: list[tuple[np.ndarray, int]],
    seq_len: int,
    pad_id: int,
    max_padding_fraction: float | None = 0.02,
) -> Packed:
    """Pack `stream` documents (splittable) and `whole` documents (each <= seq_len, never split).
    Each document is (token ids ending in EOS, number of leading tokens whose loss is masked)."""
    if any(len(ids) > seq_len for ids, _ in whole):
        raise ValueError("a whole document is longer than seq_len")
    ids_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    start_parts: list[np.ndarray] = []

    def doc_arrays(docs):
        if not docs:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, bool)
        ids = np.concatenate([d[0] for d in docs]).astype(np.int32, copy=False)
        labels = ids.copy()
        offsets = np.cumsum([0] + [len(d[0]) for d in docs[:-1]], dtype=np.int64)
        for offset, (_, masked) in zip(offsets.tolist(), docs, strict=True):
            if masked:
                labels[offset : offset + masked] = IGNORE_INDEX
        starts = np.zeros(len(ids), dtype=bool)
        starts[offsets] = True
        return ids, labels, starts

    s_ids, s_labels, s_starts = doc_arrays(stream)
    taken = 0  # stream tokens placed so far
    for members in best_fit([len(ids) for ids, _ in whole], seq_len):
        w_ids, w_labels, w_starts = doc_arrays([whole[i] for i in members])
        fill = min(seq_len - len(w_ids), len(s_ids) - taken)
        piece_starts = s_starts[taken : taken + fill].copy()
        piece_starts[:1] = True  # a document continued after the pairs is a new segment, not part of them
        ids_parts += [w_ids, s_ids[taken : taken + fill]]
        label_parts += [w_labels, s_labels[taken : taken + fill]]
        start_parts += [w_starts, piece_starts]
        taken += fill
        gap = seq_len - len(w_ids) - fill
        if gap:
            ids_parts.append(np.full(gap, pad_id, dtype=np.int32))
            label_parts.append(np.full(gap, IGNORE_INDEX, dtype=np.int32))
            start_parts.append(np.zeros(gap, dtype=bool))
    ids_parts.append(s_ids[taken:])
    label_parts.append(s_labels[taken:])
    start_parts.append(s_starts[taken:])

    # With no pairs the stream arrays are used as they are (one copy less of the whole split).
    join = (lambda parts: parts[0]) if len(ids_parts) == 1 else np.concatenate
    flat_ids, flat_labels, flat_starts = join(ids_parts), join(label_parts), join(start_parts)
    # Pair rows are always full, so the partial tail (if any) holds stream tokens only.
    padding = len(flat_ids) - len(s_ids) - sum(len(ids) for ids, _ in whole)
    del ids_parts, label_parts, start_parts, s_ids, s_labels, s_starts
    tail = len(flat_ids) % seq_len
    dropped = 0
    if tail:
        gap = seq_len - tail
        rows_if_padded = len(flat_ids) // seq_len + 1
        too_much = (max_padding_fraction is not None
                    and (padding + gap) / (rows_if_padded * seq_len) > max_padding_fraction)
        if too_much and rows_if_padded > 1:
            dropped = tail
            flat_ids, flat_labels, flat_starts = flat_ids[:-tail], flat_labels[:-tail], flat_starts[:-tail]
        else:
            flat_ids = np.concatenate([flat_ids, np.full(gap, pad_id, dtype=np.int32)])
            flat_labels = np.concatenate([flat_labels, np.full(gap, IGNORE_INDEX, dtype=np.int32)])
            flat_starts = np.concatenate([flat_starts, np.zeros(gap, dtype=bool)])
            padding += gap
    tokens = len(flat_ids) - padding
    flat_starts[::seq_len] = True  # every row starts a segment (a document continued from the row before)
    rows = len(flat_ids) // seq_len
    shape = (rows, seq_len)
    return Packed(
        flat_ids.reshape(shape), flat_labels.reshape(shape), position_ids(flat_starts).reshape(shape),
        tokens=tokens, padding=padding, dropped_tokens=dropped,
    )
