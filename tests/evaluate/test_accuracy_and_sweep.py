import json

import pytest

from codetune.config import EvalConfig
from codetune.errors import ConfigError, DataError
from codetune.evaluate.model_tasks import run_task, split_temperature
from codetune.evaluate.run import check_tasks
from codetune.evaluate.tasks import accuracy


def test_answers_compare_without_whitespace_or_special_tokens():
    specials = ["<|end|>", "<|endoftext|>"]
    assert accuracy.normalize_answer("  java<|end|>\n", specials) == "java"
    assert accuracy.normalize_answer("a  b\tc", specials) == "a b c"


def test_stop_at_the_closing_special_token_when_every_answer_has_it():
    rows = [accuracy.AccuracyExample("1", "p", "python<|end|>"), accuracy.AccuracyExample("2", "p", "java<|end|>")]
    assert accuracy.stop_sequences(rows, ["<|end|>", "<|lang|>"]) == ("<|end|>",)
    rows.append(accuracy.AccuracyExample("3", "p", "c"))
    assert accuracy.stop_sequences(rows, ["<|end|>"]) == ("\n",)


def test_pass_mark_is_reported_met_or_not():
    samples = [{"sample_index": 0, "status": s} for s in ("passed", "passed", "passed", "failed")]
    assert accuracy.summarize(samples, 0.8) == {"accuracy": 0.75, "examples": 4, "pass_mark": 0.8,
                                                "pass_mark_met": False}
    assert accuracy.summarize(samples, 0.75)["pass_mark_met"] is True


def test_malformed_rows_name_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"prompt": "x", "completion": "y"}\n{"prompt": "x"}\n')
    with pytest.raises(DataError, match="a.jsonl:2"):
        accuracy.load_accuracy_dataset(path)


def test_accuracy_task_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path):
    from codetune.config import ModelConfig
    from codetune.modeling import load_model, load_tokenizer

    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir))
    model, tokenizer = load_model(model_cfg), load_tokenizer(model_cfg)
    data = tmp_path / "acc.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"def f{i}(", "completion": "x"}) + "\n" for i in range(3)))
    cfg = EvalConfig(datasets={"accuracy": str(data)}, max_new_tokens=4, pass_mark=0.5)
    entry = run_task(model, tokenizer, "accuracy", cfg, limit=2)
    assert entry["metrics"]["examples"] == 2
    assert entry["metrics"]["pass_mark_met"] == (entry["metrics"]["accuracy"] >= 0.5)
    assert {s["status"] for s in entry["samples"]} <= {"passed", "failed"}


def test_temperature_suffix():
    assert split_temperature("humaneval@t0.8") == ("humaneval", 0.8)
    assert split_temperature("multipl-e:java") == ("multipl-e:java", None)
    assert check_tasks(["humaneval@t0.8", "multipl-e:java@t0.2", "perplexity"]) == [
        "humaneval@t0.8", "multipl-e:java@t0.2", "perplexity"]
    for bad in ("humaneval@tx", "perplexity@t0.5", "bogus@t0.2"):
        with pytest.raises(ConfigError):
            check_tasks([bad])


def test_sweep_entry_runs_at_its_temperature(tiny_model_dir):
    from codetune.config import ModelConfig
    from codetune.modeling import load_model, load_tokenizer

    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir))
    model, tokenizer = load_model(model_cfg), load_tokenizer(model_cfg)

    class NoSandbox:  # the test only looks at generation; every program "passes"
        def run(self, programs, progress=None):
            from codetune.evaluate.sandbox import Execution

            return [Execution(status="passed", exit_code=0, duration_s=0.0) for _ in programs]

        def describe(self):
            return {"isolation": "none (test)"}

    cfg = EvalConfig(max_new_tokens=4, n_samples=2, k=[1])
    entry = run_task(model, tokenizer, "humaneval@t0.9", cfg, limit=1, sandbox=NoSandbox())
    assert entry["protocol"]["task"] == "humaneval@t0.9"
    assert entry["protocol"]["sampling"]["temperature"] == 0.9
    assert {s["task"] for s in entry["samples"]} == {"humaneval@t0.9"}
