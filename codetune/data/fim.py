"""Fill-in-the-middle as StarCoder/SantaCoder trained it (bigcode's Megatron-LM `permute`): with
probability `fim_rate` a document is cut at two uniformly random character positions into
prefix/middle/suffix and rearranged as

    PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle     (with probability fim_spm_rate)

followed by the usual end-of-text token. Cuts are positions in the Python `str` (code points), so a
multi-byte UTF-8 character is never split. The pieces are tokenized separately and the sentinels are
inserted as token ids, so a literal "<fim_prefix>" inside code stays text.

Randomness comes from a generator seeded by (seed, document key): the same document gets the same
transform whatever the worker count or file order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from codetune.errors import DataError
from codetune.init_model import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

PREFIX, MIDDLE, SUFFIX = FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX
SENTINELS = (PREFIX, MIDDLE, SUFFIX)


@dataclass(frozen=True)
class FimChoice:
    """What the transform does to one document: nothing (mode None) or a split and an order."""

    mode: str | None  # None | "psm" | "spm"
    lo: int = 0
    hi: int = 0


def rng_for(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest, "little")])


def choose(length: int, rng: np.random.Generator, fim_rate: float, spm_rate: float) -> FimChoice:
    """Draw as bigcode did: a Bernoulli(fim_rate), two cut points in [0, length], a Bernoulli(spm_rate).
    Empty pieces are allowed (either cut may sit at an end, or both at the same place)."""
    if fim_rate <= 0 or rng.random() >= fim_rate:
        return FimChoice(None)
    lo, hi = sorted(int(x) for x in rng.integers(0, length + 1, size=2))
    mode = "spm" if rng.random() < spm_rate else "psm"
    return FimChoice(mode, lo, hi)


def pieces(text: str, choice: FimChoice) -> list[str]:
    """The transformed document as a list of text pieces and sentinel names (see module docstring)."""
    if choice.mode is None:
        return [text]
    prefix, middle, suffix = text[: choice.lo], text[choice.lo : choice.hi], text[choice.hi :]
    if choice.mode == "psm":
        return [PREFIX, prefix, SUFFIX, suffix, MIDDLE, middle]
    return [PREFIX, SUFFIX, suffix, MIDDLE, prefix, middle]


# Where the sentinels sit in `pieces` output; the other entries are text (possibly equal to a sentinel).
SENTINEL_POSITIONS = {None: frozenset(), "psm": frozenset({0, 2, 4}), "spm": frozenset({0, 1, 3})}


def transform(text: str, seed: int, key: str, fim_rate: float, spm_rate: float) -> tuple[list[str], str | None]:
    """(`pieces` of `text`, mode) under the seeded draw for document `key`."""
    choice = choose(len(text), rng_for(seed, key), fim_rate, spm_rate)
    return pieces(text, choice), choice.mode


def undo(parts: list[str], mode: str | None) -> str:
    """The original document back from `pieces` output (the property the tests check)."""
    if mode is None:
        return parts[0]
    if mode == "spm":  # suffix, then prefix + middle, which is where the document starts
        _, _, suffix, _, prefix, middle = parts
    else:
        _, prefix, _, suffix, _, middle = parts
    return prefix + middle + suffix


def sentinel_ids(tokenizer) -> dict[str, int]:
    """Token ids of the FIM sentinels; DataError when the tokenizer lacks any of them."""
    vocab = tokenizer.get_vocab()
    missing = [s for s in SENTINELS if s not in vocab]
    if missing:
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise DataError(
            f"{name} has no FIM tokens ({', '.join(missing)} missing) but data.fim_rate > 0; "
            f"set data.fim_rate=0 or use a tokenizer with StarCoder's FIM tokens"
        )
    return {s: vocab[s] for s in SENTINELS}
