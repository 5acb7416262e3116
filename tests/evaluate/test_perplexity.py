"""Sliding-window perplexity: the window plan and the reduction by hand, the model path against direct loops."""

import json
import math

import pytest

from codetune.evaluate.perplexity import (
    Document,
    NllTotals,
    Window,
    evaluate_perplexity,
    limit_per_language,
    read_paths,
    read_valid_files,
    summarize,
    window_spans,
)


def test_window_spans_hand_worked():
    assert window_spans(10, 4, 2) == [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]
    # stride == max_length: non-overlapping chunks; each chunk's first token has no context.
    assert window_spans(10, 4, 4) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]
    assert window_spans(3, 8, 1) == [Window(0, 3, 1)]
    assert window_spans(1, 8, 4) == []


@pytest.mark.parametrize("n,max_length,stride", [(50, 8, 3), (17, 5, 4), (9, 9, 1), (100, 16, 15), (2, 2, 1)])
def test_overlapping_windows_score_every_token_once_within_the_window(n, max_length, stride):
    spans = window_spans(n, max_length, stride)
    targets = [t for w in spans for t in range(w.target_begin, w.end)]
    assert targets == list(range(1, n))
    assert all(w.end - w.begin <= max_length and w.begin < w.target_begin for w in spans)


def test_window_spans_rejects_stride_above_window():
    with pytest.raises(ValueError):
        window_spans(10, 4, 5)


def test_summarize_hand_numbers():
    out = summarize(NllTotals(nll_nats=4 * math.log(2), tokens=2, bytes=8, files=1))
    assert out["perplexity"] == pytest.approx(4.0)
    assert out["bits_per_token"] == pytest.approx(2.0)
    assert out["bits_per_byte"] == pytest.approx(0.5)
    # Unscored tokens make bits per byte an underestimate: not reported.
    assert summarize(NllTotals(nll_nats=1.0, tokens=2, tokens_unscored=1, bytes=8))["bits_per_byte"] is None
    assert summarize(NllTotals())["perplexity"] is None


def test_totals_add_and_limit_per_language():
    a = NllTotals(1.0, 2, 0, 10, 1)
    a.add(NllTotals(2.0, 3, 1, 20, 1))
    assert (a.nll_nats, a.tokens, a.tokens_unscored, a.bytes, a.files) == (3.0, 5, 1, 30, 2)
    docs = [Document(str(i), lang, "x") for i, lang in enumerate(["py", "py", "java", "py", "java", "java"])]
    assert [d.path for d in limit_per_language(docs, 2)] == ["0", "1", "2", "4"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


TEXT = "import os\n\ndef walk(root):\n    for name in os.listdir(root):\n        yield os.path.join(root, name)\n"


def _ids(tok, text):
    return [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]


def _token_by_token(model, ids, context=None):
    """Direct NLL: each token t from the tokens before it (all of them, or the last `context`)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            ctx = ids[:t] if context is None else ids[max(0, t - context):t]
            logits = model(input_ids=torch.tensor([ctx])).logits[0, -1]
            total -= torch.log_softmax(logits.float(), -1)[ids[t]].item()
    return total


def test_stride_one_equals_full_context_token_by_token(lm):
    model, tok = lm
    ids = _ids(tok, TEXT)
    result = evaluate_perplexity(model, tok, [Document("a.py", "python", TEXT)], max_length=len(ids) + 4, stride=1)
    assert result.overall["tokens"] == len(ids) - 1
    assert result.overall["nll_nats"] == pytest.approx(_token_by_token(model, ids), rel=1e-4)
    assert result.overall["bits_per_byte"] == pytest.approx(
        result.overall["nll_nats"] / math.log(2) / len(TEXT.encode()), rel=1e-9)


def test_stride_equal_to_window_is_the_non_overlapping_split(lm):
    import torch

    model, tok = lm
    ids = _ids(tok, TEXT * 3)
    window = 16
    expected, counted = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), window):
            chunk = torch.tensor([ids[start:start + window]])
            if chunk.shape[1] < 2:
                continue
            loss = model(input_ids=chunk, labels=chunk).loss.item()  # mean over chunk length - 1
            expected += loss * (chunk.shape[1] - 1)
            counted += chunk.shape[1] - 1
    result = evaluate_perplexity(model, tok, [Document("a.py", "python", TEXT * 3)], max_length=window,
                                 stride=window, batch_size=3)
    assert result.overall["tokens"] == counted
    assert result.overall["tokens_unscored"] == len(ids) - 1 - counted > 0
    assert result.overall["bits_per_byte"] is None
    assert result.overall["nll_nats"] == pytest.approx(expected, rel=1e-4)


def test_overlapping_stride_matches_the_hugging_face_loop(lm):
    """The guide's reference loop (labels -100 outside the new tokens, model loss) on the same windows."""
    import torch

    model, tok = lm
    ids = _ids(tok, TEXT * 2)
    max_length, stride = 24, 7
    seq = torch.tensor([ids])
    expected, prev_end = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + max_length, len(ids))
            trg_len = end - prev_end
            input_ids = seq[:, begin:end]
            labels = input_ids.clone()
            labels[:, :-trg_len] = -100
            valid = int((labels[:, 1:] != -100).sum())
            expected += model(input_ids=input_ids, labels=labels).loss.item() * valid
            prev_end = end
            if end == len(ids):
                break
    result = evaluate_perplexity(model, tok, [Document("a.py", "python", TEXT * 2)], max_length=max_length,
                                 stride=stride, batch_size=2)
    assert result.overall["tokens"] == len(ids) - 1
    assert result.overall["nll_nats"] == pytest.approx(expected, rel=1e-4)


def test_stride_one_past_the_window_gives_each_token_the_last_window_minus_one_tokens(lm):
    model, tok = lm
    ids = _ids(tok, TEXT)
    window = 9
    result = evaluate_perplexity(model, tok, [Document("a.py", "python", TEXT)], max_length=window, stride=1,
                                 batch_size=16)
    assert result.overall["tokens"] == len(ids) - 1
    assert result.overall["nll_nats"] == pytest.approx(_token_by_token(model, ids, context=window - 1), rel=1e-4)


def test_batched_padding_does_not_change_results_and_languages_are_separate(lm):
    model, tok = lm
    docs = [Document("a.py", "python", TEXT), Document("b.java", "java", "class A { int x = 1; }\n"),
            Document("c.py", "python", TEXT * 4)]
    one = evaluate_perplexity(model, tok, docs, max_length=32, stride=16, batch_size=1)
    many = evaluate_perplexity(model, tok, docs, max_length=32, stride=16, batch_size=8)
    assert set(many.by_language) == {"java", "python"}
    assert many.by_language["python"]["files"] == 2
    for lang in ("java", "python"):
        assert many.by_language[lang]["nll_nats"] == pytest.approx(one.by_language[lang]["nll_nats"], rel=1e-4)
    assert many.overall["tokens"] == many.by_language["java"]["tokens"] + many.by_language["python"]["tokens"]
    assert many.overall["bytes"] == sum(len(d.text.encode()) for d in docs)
    assert many.protocol["max_length"] == 32 and many.protocol["stride"] == 16


def test_read_valid_files_and_paths(tmp_path):
    rows = [{"path": "x/a.py", "language": "python", "text": "a = 1\n"}, {"path": "B.java", "language": "java",
                                                                           "text": "class B {}\n"}]
    (tmp_path / "valid_files.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = read_valid_files(tmp_path / "valid_files.jsonl")
    assert [(d.path, d.language) for d in docs] == [("x/a.py", "python"), ("B.java", "java")]
    src = tmp_path / "src"
    (src / ".git").mkdir(parents=True)
    (src / "m.cpp").write_text("int main() {}\n")
    (src / "notes.bin").write_bytes(b"\x00\x01")
    (src / ".git" / "x.py").write_text("hidden = 1\n")
    assert [(d.language, d.text) for d in read_paths([src])] == [("cpp", "int main() {}\n")]
