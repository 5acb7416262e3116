"""`codetune eval` end to end on tiny models: one model, a run directory with checkpoints, the trainer hook."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from codetune.cli import app
from codetune.errors import ConfigError
from codetune.evaluate.failures import STATUSES
from codetune.evaluate.run import check_tasks, evaluate_checkpoint, flat_metrics, run_targets

SNIPPETS = [
    ("pkg/a.py", "python", "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"),
    ("pkg/b.py", "python", "import os\n\nfor name in os.listdir('.'):\n    print(name)\n"),
    ("src/C.java", "java", "class C {\n    int twice(int x) { return 2 * x; }\n}\n"),
]


def _sandbox_or_skip():
    from codetune.errors import SandboxError
    from codetune.evaluate.sandbox import detect_isolation

    try:
        detect_isolation()
    except SandboxError as exc:
        pytest.skip(f"no sandbox here: {exc}")


@pytest.fixture(scope="module")
def sql_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sql")
    conn = sqlite3.connect(root / "shop.sqlite")
    conn.execute("CREATE TABLE item (id INTEGER, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(1, "pen", 1.5), (2, "ink", 7.0), (3, "pad", 3.0)])
    conn.commit()
    conn.close()
    rows = [{"question": "How many items?", "query": "SELECT count(*) FROM item", "db_path": "shop.sqlite"},
            {"question": "Most expensive item?", "query": "SELECT name FROM item ORDER BY price DESC LIMIT 1",
             "db_path": "shop.sqlite"}]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "dev.jsonl"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, tiny_model_dir):
    """A run directory as prepare + train leave it: config, held-out files, a full and a LoRA checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.config import Config, ModelConfig, write_resolved

    run = tmp_path_factory.mktemp("run")
    write_resolved(Config(name="t", output_dir=str(run), model=ModelConfig(name_or_path=str(tiny_model_dir))))
    (run / "data").mkdir()
    (run / "data" / "valid_files.jsonl").write_text(
        "".join(json.dumps({"path": p, "language": lang, "text": t}) + "\n" for p, lang, t in SNIPPETS))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    for path in (run / "checkpoints" / "step-1", run / "checkpoints" / "step-2"):
        path.mkdir(parents=True)
    model.save_pretrained(run / "checkpoints" / "step-1")
    tokenizer.save_pretrained(run / "checkpoints" / "step-1")
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(run / "checkpoints" / "step-2")
    tokenizer.save_pretrained(run / "checkpoints" / "step-2")
    (run / "checkpoints" / "step-3").mkdir()  # being written: no config.json yet
    return run


def test_check_tasks():
    assert check_tasks(["perplexity", " humaneval", "multipl-e:java", "humaneval-x:cpp", "sql", ""]) == [
        "perplexity", "humaneval", "multipl-e:java", "humaneval-x:cpp", "sql"]
    for bad in (["humaneval:python"], ["multipl-e"], ["mbpp"], []):
        with pytest.raises(ConfigError):
            check_tasks(bad)


def test_run_targets(fake_run, tiny_model_dir):
    targets, _ = run_targets(fake_run)
    assert [t.name for t in targets] == ["base", "step-1", "step-2"]
    assert targets[0].model.name_or_path == str(tiny_model_dir) and targets[0].adapter is None
    assert targets[1].model.name_or_path == str(fake_run / "checkpoints" / "step-1")
    assert targets[2].model.name_or_path == str(tiny_model_dir)
    assert targets[2].adapter == str(fake_run / "checkpoints" / "step-2")


def test_flat_metrics():
    entries = {"perplexity": {"metrics": {"perplexity": 9.0, "bits_per_byte": 1.5, "bits_per_token": None,
                                          "by_language": {"java": {"bits_per_byte": 2.0}}}},
               "humaneval": {"metrics": {"pass@1": {"value": 0.25}, "statuses": {"failed": 3}}},
               "sql": {"metrics": {"exact_match": 0.5, "execution_accuracy": None}}}
    assert flat_metrics(entries) == {"eval/perplexity/perplexity": 9.0, "eval/perplexity/bits_per_byte": 1.5,
                                     "eval/perplexity/java/bits_per_byte": 2.0, "eval/humaneval/pass@1": 0.25,
                                     "eval/sql/exact_match": 0.5}


def test_eval_one_model_perplexity_and_humaneval(tiny_model_dir, tmp_path):
    _sandbox_or_skip()
    code = tmp_path / "code"
    code.mkdir()
    for path, _, text in SNIPPETS:
        (code / path.replace("/", "_")).write_text(text)
    out = tmp_path / "out"
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", "perplexity,humaneval", "--limit", "3",
            "--max-new-tokens", "12", "--perplexity-path", str(code), "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    ppl = results["tasks"]["perplexity"]["metrics"]
    assert set(ppl["by_language"]) == {"python", "java"} and ppl["tokens"] > 0 and ppl["bytes"] > 0
    assert ppl["bits_per_byte"] > 0
    he = results["tasks"]["humaneval"]
    assert he["metrics"]["pass@1"]["value"] <= 1 / 3  # a random tiny model does not write HumanEval solutions
    assert sum(he["metrics"]["statuses"].values()) == 3
    protocol = he["protocol"]
    assert protocol["dataset_sha256"] and protocol["stop_sequences"] and protocol["n"] == 1
    assert protocol["sampling"]["max_new_tokens"] == 12 and protocol["codetune_version"]
    assert protocol["sandbox"]["isolation"] in ("bwrap", "unshare")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    executed = [s for s in samples if s["task"] == "humaneval"]
    assert len(executed) == 3
    assert all(s["status"] in STATUSES and s["finish_reason"] in ("stop", "length") for s in executed)
    assert all("exit_code" in s and "duration_s" in s and "stderr" in s for s in executed)
    assert len([s for s in samples if s["task"] == "perplexity"]) == 3  # one row per file
    # The same request again is answered from the stored results.
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads((out / "results.json").read_text())["created"] == results["created"]


def test_eval_run_dir_base_and_checkpoints(fake_run, sql_dataset):
    _sandbox_or_skip()
    args = ["eval", str(fake_run), "--tasks", "perplexity,humaneval,sql", "--limit", "2", "--max-new-tokens", "8",
            "--dataset", f"sql={sql_dataset}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    per_model = {}
    for name in ("base", "step-1", "step-2"):
        per_model[name] = json.loads((fake_run / "eval" / name / "results.json").read_text())
        assert set(per_model[name]["tasks"]) == {"perplexity", "humaneval", "sql"}
        samples = (fake_run / "eval" / name / "samples.jsonl").read_text().splitlines()
        assert len([s for s in samples if '"task": "humaneval"' in s]) == 2
    assert per_model["step-2"]["model"]["adapter"].endswith("step-2")
    ppl = {n: r["tasks"]["perplexity"]["metrics"]["by_language"]["python"]["bits_per_byte"]
           for n, r in per_model.items()}
    assert len(set(ppl.values())) == 3  # three different models
    sql = per_model["base"]["tasks"]["sql"]
    assert sql["metrics"]["samples_on_rows"] == 2 and sql["protocol"]["dataset_sha256"]
    assert not (fake_run / "eval" / "step-3").exists()
    page = (fake_run / "eval" / "compare.html").read_text()
    assert "step-2" in page and (fake_run / "eval" / "compare_failures.png").is_file()
    assert "Change vs base" in page


def test_evaluate_checkpoint_hook(tiny_model_dir, fake_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.config import EvalConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = EvalConfig(max_new_tokens=6, datasets={})
    metrics = evaluate_checkpoint(model, tokenizer, ["perplexity"], limit=1, eval_cfg=cfg, run_dir=fake_run,
                                  output_dir=tmp_path / "step-7")
    assert model.training  # handed back as it came
    assert metrics["eval/perplexity/bits_per_byte"] > 0
    assert set(metrics) >= {"eval/perplexity/python/bits_per_byte", "eval/perplexity/java/bits_per_byte"}
    stored = json.loads((tmp_path / "step-7" / "results.json").read_text())
    assert stored["tasks"]["perplexity"]["protocol"]["limit_per_language"] == 1


def test_cli_errors_are_one_line():
    runner = CliRunner()
    for args in (["eval"], ["eval", "--samples", "x.jsonl"], ["eval", "--model", "m", "--tasks", "mbpp"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error:")


def test_sparql_task_on_a_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.config import EvalConfig
    from codetune.evaluate.model_tasks import run_task

    (tmp_path / "kg.ttl").write_text("@prefix dbr: <http://dbpedia.org/resource/> .\n"
                                     "@prefix dbo: <http://dbpedia.org/ontology/> .\n"
                                     "dbr:Rome dbo:country dbr:Italy .\n")
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Where is Rome?",
                                                  "query": "SELECT ?c WHERE { dbr:Rome dbo:country ?c }"}) + "\n")
    cfg = EvalConfig(max_new_tokens=8, datasets={"sparql": str(tmp_path / "q.jsonl")},
                     sparql_graph=str(tmp_path / "kg.ttl"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    entry = run_task(model, AutoTokenizer.from_pretrained(tiny_model_dir), "sparql", cfg)
    assert entry["metrics"]["answer_f1"] is not None and entry["metrics"]["bleu"] >= 0
    assert entry["samples"][0]["status"] in STATUSES and entry["samples"][0]["finish_reason"] in ("stop", "length")
    assert entry["protocol"]["graph"].endswith("kg.ttl") and len(entry["protocol"]["dataset_sha256"]) == 2
