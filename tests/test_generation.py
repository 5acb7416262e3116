import pytest

from codetune.generation import SamplingParams, generate, truncate_at_stop


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("return x\ndef g():", ["\ndef", "\nclass"], ("return x", "\ndef")),
        ("a\nclass B\ndef", ["\ndef", "\nclass"], ("a", "\nclass")),
        ("nothing here", ["\ndef"], ("nothing here", None)),
        ("", ["x"], ("", None)),
        ("abc", [""], ("abc", None)),
        ("ab}\n}", ["\n}"], ("ab}", "\n}")),
    ],
)
def test_truncate_at_stop(text, stops, expected):
    assert truncate_at_stop(text, stops) == expected


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_greedy_equals_one_by_one(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = ["def add(a, b):\n", "import os\n\nclass Thing:\n    def __init__(self", "x = 1"]
    params = SamplingParams(max_new_tokens=12)
    batched = generate(model, tok, prompts, params, batch_size=3)
    single = [generate(model, tok, [p], params, batch_size=1)[0] for p in prompts]
    assert [g[0].text for g in batched] == [g[0].text for g in single]
    assert all(g[0].finish_reason in ("stop", "length") for g in batched)


def test_sampling_is_seeded_and_n_samples_come_back(model_and_tokenizer):
    model, tok = model_and_tokenizer
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95, n=3, seed=7)
    first = generate(model, tok, ["def f(x):"], params)
    again = generate(model, tok, ["def f(x):"], params)
    assert len(first[0]) == 3
    assert [g.text for g in first[0]] == [g.text for g in again[0]]


def test_stop_sequences_end_each_sequence_on_its_own(model_and_tokenizer):
    model, tok = model_and_tokenizer
    free = generate(model, tok, ["def f(x):"], SamplingParams(max_new_tokens=20))[0][0]
    assert free.finish_reason == "length" and len(free.text) > 2
    stop = free.text[1:3]  # a stop string the model is known to emit early in this completion
    stopped = generate(model, tok, ["def f(x):", "x = 1"], SamplingParams(max_new_tokens=20, stop=(stop,)))
    first = stopped[0][0]
    assert first.finish_reason == "stop" and first.stop_sequence == stop
    assert first.text == free.text[: free.text.find(stop)]
    assert first.num_tokens < 20
