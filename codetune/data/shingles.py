"""Word tokens and hashes of runs of consecutive words (n-grams), shared by near-dedup (MinHash
shingles) and decontamination (benchmark n-grams), so each file is split into words once.

Words are runs of ASCII letters, digits and `_` (non-ASCII characters stay inside words), found with
`str.translate` + `split`, which is several times faster than `re.findall(r"\\w+")` on code. Window
hashes are computed with numpy from per-word CRC32s: 64-bit and position-dependent, so "a b" and
"b a" differ and two different n-grams share a hash with negligible probability (callers that must be
exact confirm a hit on the words themselves).
"""

from __future__ import annotations

import string
import zlib

import numpy as np

_WORD_CHARS = set(string.ascii_letters + string.digits + "_")
_TO_SPACE = str.maketrans({chr(c): " " for c in range(128) if chr(c) not in _WORD_CHARS})
# Odd 64-bit multipliers (splitmix64 / murmur constants), one per position in the window, cycled.
_MULTIPLIERS = np.array([
    0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53, 0x2127599BF4325C37, 0x880355F21E6D1965, 0xD6E8FEB86659FD93,
], dtype=np.uint64)


def split_words(text: str) -> list[str]:
    return text.translate(_TO_SPACE).split()


def word_hashes(words: list[str]) -> np.ndarray:
    return np.fromiter(map(zlib.crc32, map(str.encode, words)), dtype=np.uint64, count=len(words))


def window_hashes(hashes: np.ndarray, size: int) -> np.ndarray:
    """One uint64 per run of `size` consecutive words (empty when there are fewer words)."""
    count = len(hashes) - size + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    for j in range(size):
        mult = _MULTIPLIERS[j % len(_MULTIPLIERS)]
        out ^= (hashes[j : j + count] + np.uint64(j + 1)) * mult
        out ^= out >> np.uint64(29)  # mix so position j's bits reach the low half before the next product
    return out


def fold32(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes to 32 bits (datasketch's default MinHash scheme takes 32-bit values)."""
    return ((hashes >> np.uint64(32)) ^ hashes).astype(np.uint32)


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hash path is several times slower on these sizes)."""
    if len(values) < 2:
        return values
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
