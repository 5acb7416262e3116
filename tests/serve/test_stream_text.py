"""Pure pieces of serving: what may be streamed before a stop sequence, batch selection, FIM prompts."""

from __future__ import annotations

import asyncio
import json

import pytest

from codetune.generation import SamplingParams
from codetune.serve.engine import Submission, held_back, streamable, take_batch
from codetune.serve.fim import build_fim_prompt, find_fim_tokens
from codetune.serve.run import resolve_model


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("return x\n", ["\ndef"], 1),  # "\n" may start "\ndef"
        ("return x\nde", ["\ndef"], 3),
        ("return x", ["\ndef"], 0),
        ("abcab", ["abc", "bx"], 2),  # "ab" for abc beats "b" for bx
        ("x;", [";"], 0),  # a complete stop is truncate_at_stop's business, not held back
        ("", ["abc"], 0),
    ],
)
def test_held_back(text, stops, expected):
    assert held_back(text, stops) == expected


def test_streamable_holds_back_partial_stops_and_split_characters():
    assert streamable("a = 1\n", ["\n\n"], final=False) == ("a = 1", None)
    assert streamable("a = 1\n\nb", ["\n\n"], final=False) == ("a = 1", "\n\n")
    assert streamable("caf\ufffd", [], final=False) == ("caf", None)
    assert streamable("a = 1\n", ["\n\n"], final=True) == ("a = 1\n", None)


def test_streamed_pieces_add_up_to_the_truncated_text():
    # Emitting streamable() prefixes as the text grows one character at a time never emits a stop sequence.
    full, stops, sent = "x = 1\ny = 2\n\nz = 3", ["\n\n", "\nz"], ""
    for end in range(1, len(full) + 1):
        shown, found = streamable(full[:end], stops, final=False)
        assert shown.startswith(sent)
        sent = shown
        if found:
            break
    assert sent == "x = 1\ny = 2"


def _sub(temperature=0.0, n=1, seed=None, top_p=1.0):
    loop = asyncio.new_event_loop()
    try:
        return Submission([1], SamplingParams(temperature=temperature, top_p=top_p, n=n), seed, loop)
    finally:
        loop.close()


def test_take_batch_groups_compatible_requests_in_arrival_order():
    g1, s1, g2, s2, s3 = _sub(), _sub(0.8, seed=1), _sub(n=3), _sub(0.8, seed=1), _sub(0.8, seed=2)
    batch, rest = take_batch([g1, s1, g2, s2, s3], max_batch_size=8)
    assert batch == [g1, g2] and rest == [s1, s2, s3]
    batch, rest = take_batch(rest, max_batch_size=8)
    assert batch == [s1, s2] and rest == [s3]


def test_take_batch_respects_the_row_cap_but_runs_a_large_n_whole():
    a, b, c = _sub(n=3), _sub(n=3), _sub(n=1)
    batch, rest = take_batch([a, b, c], max_batch_size=4)
    assert batch == [a, c] and rest == [b]
    big = _sub(n=6)
    assert take_batch([big, a], max_batch_size=4) == ([big], [a])
    assert take_batch([a, b], max_batch_size=1) == ([a], [b])


def test_fim_tokens_and_psm_prompt():
    star = find_fim_tokens({"<fim_prefix>": 1, "<fim_suffix>": 2, "<fim_middle>": 3})
    assert build_fim_prompt(star, "def f(", "\n    return y") == \
        "<fim_prefix>def f(<fim_suffix>\n    return y<fim_middle>"
    qwen = find_fim_tokens({"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"})
    assert qwen.psm("a", "b") == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    assert find_fim_tokens({"<fim_prefix>", "<fim_middle>"}) is None
    with pytest.raises(ValueError, match="fill-in-the-middle"):
        build_fim_prompt(None, "a", "b")


def test_a_model_argument_that_is_an_adapter_stands_for_its_base(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "bigcode/starcoder2-3b"}))
    assert resolve_model(str(tmp_path), None) == ("bigcode/starcoder2-3b", str(tmp_path))
    assert resolve_model("bigcode/starcoder2-3b", "ad") == ("bigcode/starcoder2-3b", "ad")
