"""Exact deduplication by content hash and near deduplication with MinHash LSH (datasketch), as The
Stack / StarCoder did: shingles of `shingle_size` consecutive word tokens, `num_perm` permutations,
Jaccard `threshold`. The first file of a cluster is kept, later members are dropped.

Signatures are computed in the worker processes (`signature`), the LSH index lives in the main process
(`NearDedup`), so the expensive part runs on every core and the decisions stay in file order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from codetune.data.shingles import distinct, fold32, split_words, window_hashes, word_hashes


def content_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def shingle_hashes(word_hashes: np.ndarray, size: int) -> np.ndarray:
    """Distinct 32-bit hashes of every run of `size` words (one shingle for a shorter text)."""
    if len(word_hashes) == 0:
        return np.zeros(0, dtype=np.uint32)
    return distinct(fold32(window_hashes(word_hashes, min(size, len(word_hashes)))))


def _identity(value):
    return value


class Signer:
    """Builds MinHash signatures with one shared set of permutations (datasketch's affine32 scheme)."""

    def __init__(self, num_perm: int, shingle_size: int, seed: int = 1):
        from datasketch import MinHash

        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)
        self.num_perm = num_perm
        self.shingle_size = shingle_size

    def minhash(self, hashvalues: np.ndarray | None = None):
        from datasketch import MinHash

        t = self._template
        return MinHash(num_perm=self.num_perm, hashfunc=_identity, permutations=t.permutations,
                       hashvalues=hashvalues, scheme=t.scheme)

    def signature(self, text: str) -> np.ndarray:
        return self.signature_of_words(word_hashes(split_words(text)))

    def signature_of_words(self, hashes: np.ndarray) -> np.ndarray:
        """The MinHash of a text given its per-word hashes (`shingles.word_hashes`)."""
        m = self.minhash()
        shingles = shingle_hashes(hashes, self.shingle_size)
        if len(shingles):
            # The identity hashfunc passes our 32-bit shingle hashes through; datasketch premixes them.
            m.update_batch(shingles.tolist())
        return m.hashvalues


class NearDedup:
    """Streaming near-duplicate detection: `check` returns the key of an earlier similar file (the
    duplicate is then not indexed) or None (the file is indexed and kept)."""

    def __init__(self, signer: Signer, threshold: float):
        from datasketch import MinHashLSH

        self.signer = signer
        self.lsh = MinHashLSH(threshold=threshold, num_perm=signer.num_perm)
        self.cluster_sizes: dict[str, int] = {}  # representative key -> members including itself
        self._minhashes: dict[str, object] = {}
        self.threshold = threshold

    def check(self, key: str, hashvalues: np.ndarray) -> str | None:
        m = self.signer.minhash(hashvalues)
        for candidate in self.lsh.query(m):
            # LSH candidates are probable matches; confirm with the estimated Jaccard similarity.
            if self._minhashes[candidate].jaccard(m) >= self.threshold:
                self.cluster_sizes[candidate] = self.cluster_sizes.get(candidate, 1) + 1
                return candidate
        self.lsh.insert(key, m)
        self._minhashes[key] = m
        return None

    @property
    def clusters(self) -> int:
        """Groups of near-duplicates found (each counts once, however many members it had)."""
        return len(self.cluster_sizes)


class ExactDedup:
    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def check(self, digest: bytes) -> bool:
        """True when this content was seen before (the caller drops it)."""
        if digest in self.seen:
            return True
        self.seen.add(digest)
        return False
