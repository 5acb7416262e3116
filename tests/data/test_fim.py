"""FIM transform: the StarCoder layouts on hand-worked examples, and property tests (round trip, rate 0
is the identity, seeded reproducibility, multi-byte characters intact through the tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codetune.data import fim
from codetune.data.encoding import EncodeSettings, Job, encode_batch, init_worker
from codetune.errors import DataError

P, M, S = fim.PREFIX, fim.MIDDLE, fim.SUFFIX
texts = st.text(max_size=300)
rates = st.floats(min_value=0.0, max_value=1.0)


def test_psm_and_spm_layouts_match_bigcode():
    text = "abcdefgh"
    assert fim.pieces(text, fim.FimChoice("psm", 2, 5)) == [P, "ab", S, "fgh", M, "cde"]
    assert fim.pieces(text, fim.FimChoice("spm", 2, 5)) == [P, S, "fgh", M, "ab", "cde"]
    assert fim.pieces(text, fim.FimChoice(None)) == [text]


def test_cuts_are_uniform_over_all_positions_including_the_ends():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        choice = fim.choose(3, rng, fim_rate=1.0, spm_rate=0.5)
        assert 0 <= choice.lo <= choice.hi <= 3
        seen.add((choice.lo, choice.hi))
    # All 10 sorted pairs from {0..3}: empty prefix, middle and suffix all occur.
    assert seen == {(a, b) for a in range(4) for b in range(a, 4)}


def test_rates_are_honoured_over_many_documents():
    modes = [fim.transform("x" * 50, 7, f"doc{i}", 0.5, 0.25)[1] for i in range(4000)]
    fim_share = sum(m is not None for m in modes) / len(modes)
    spm_share = sum(m == "spm" for m in modes) / max(1, sum(m is not None for m in modes))
    assert abs(fim_share - 0.5) < 0.03
    assert abs(spm_share - 0.25) < 0.03


@given(text=texts, seed=st.integers(0, 2**31), rate=rates, spm=rates, key=st.text(max_size=20))
def test_round_trip_recovers_the_document(text, seed, rate, spm, key):
    parts, mode = fim.transform(text, seed, key, rate, spm)
    assert fim.undo(parts, mode) == text


@given(text=texts, seed=st.integers(0, 2**31), spm=rates, key=st.text(max_size=20))
def test_rate_zero_is_the_identity(text, seed, spm, key):
    assert fim.transform(text, seed, key, 0.0, spm) == ([text], None)


@given(text=texts, seed=st.integers(0, 2**31), rate=rates, spm=rates, key=st.text(max_size=20))
def test_same_seed_same_output(text, seed, rate, spm, key):
    assert fim.transform(text, seed, key, rate, spm) == fim.transform(text, seed, key, rate, spm)


def test_different_documents_get_different_cuts():
    text = "0123456789" * 20
    outputs = {tuple(fim.transform(text, 0, f"file{i}.py", 1.0, 0.5)[0]) for i in range(30)}
    assert len(outputs) > 20


@given(text=st.text(alphabet=st.sampled_from("aé中😀\u0301 \n"), max_size=80), seed=st.integers(0, 2**31))
def test_multibyte_characters_are_never_split(text, seed):
    parts, mode = fim.transform(text, seed, "k", 1.0, 0.5)
    pieces = [p for i, p in enumerate(parts) if i not in fim.SENTINEL_POSITIONS[mode]]
    # Each piece is whole characters: its UTF-8 bytes decode on their own, and they add up to the text.
    assert all(p.encode("utf-8").decode("utf-8") == p for p in pieces)
    assert sum(len(p.encode("utf-8")) for p in pieces) == len(text.encode("utf-8"))


def _settings(tokenizer, rate=1.0, spm=0.5, seed=0):
    return EncodeSettings(tokenizer.eos_token_id, fim.sentinel_ids(tokenizer), rate, spm, seed)


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab é中😀\n\t{}()<>|_"), max_size=60), seed=st.integers(0, 1000))
def test_token_level_round_trip_through_the_tokenizer(tiny_tokenizer, text, seed):
    init_worker(tiny_tokenizer, _settings(tiny_tokenizer, seed=seed))
    (ids, masked, applied), = encode_batch([Job("k", text=text, fim=True)])
    sid = fim.sentinel_ids(tiny_tokenizer)
    ids = ids.tolist()
    assert ids[-1] == tiny_tokenizer.eos_token_id and masked == 0 and applied
    body = ids[:-1]
    assert body[0] == sid[P]
    if body[1] == sid[S]:  # SPM: <pre><suf> suffix <mid> prefix+middle
        mid = body.index(sid[M])
        suffix, start = body[2:mid], body[mid + 1 :]
        decoded = tiny_tokenizer.decode(start) + tiny_tokenizer.decode(suffix)
    else:  # PSM: <pre> prefix <suf> suffix <mid> middle
        s_at, m_at = body.index(sid[S]), body.index(sid[M])
        prefix, suffix, middle = body[1:s_at], body[s_at + 1 : m_at], body[m_at + 1 :]
        decoded = tiny_tokenizer.decode(prefix) + tiny_tokenizer.decode(middle) + tiny_tokenizer.decode(suffix)
    assert decoded == text


def test_literal_sentinel_text_in_code_stays_text(tiny_tokenizer):
    init_worker(tiny_tokenizer, _settings(tiny_tokenizer, rate=0.0))
    code = 'EOS = "<|endoftext|>"  # and <fim_prefix>'
    (ids, _, applied), = encode_batch([Job("k", text=code, fim=True)])
    specials = set(fim.sentinel_ids(tiny_tokenizer).values()) | {tiny_tokenizer.eos_token_id}
    assert not applied
    assert not specials & set(ids[:-1].tolist())
    assert tiny_tokenizer.decode(ids[:-1].tolist()) == code


def test_pairs_mask_the_prompt_and_never_get_fim(tiny_tokenizer):
    init_worker(tiny_tokenizer, _settings(tiny_tokenizer, rate=1.0))
    prompt, completion = "-- list users\n", "SELECT * FROM users;"
    (ids, masked, applied), = encode_batch([Job("k", prompt=prompt, completion=completion, fim=True)])
    prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert not applied
    assert masked == len(prompt_ids)
    assert ids[:masked].tolist() == prompt_ids
    assert tiny_tokenizer.decode(ids[masked:-1].tolist()) == completion


def test_missing_fim_tokens_is_a_clear_error(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(["def f(): pass"] * 10, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    with pytest.raises(DataError, match="no FIM tokens.*fim_rate"):
        fim.sentinel_ids(tok)
