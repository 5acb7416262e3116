"""The executor is right: canonical solutions pass (HumanEval 164/164; HumanEval-X in python, java, js, cpp) with
the sandbox on, and wrong solutions fail with the right status. MultiPL-E programs assemble and run."""

import os
import shutil
import subprocess

import pytest

from codetune.evaluate.languages import get_language
from codetune.evaluate.sandbox import Sandbox
from codetune.evaluate.tasks import load_task

# Problems whose canonical solution cannot pass here, and why (statuses the harness must still get right).
KNOWN_BAD = {
    "JavaScript/112": ("failed", "dataset bug: `return (z, false)` is the comma operator, not a pair"),
}


def js_md5_status() -> str:
    """JavaScript/162's canonical solution needs the npm package js-md5."""
    from codetune.evaluate.languages import JS

    found = shutil.which("node") and subprocess.run(["node", "-e", "require.resolve('js-md5')"], capture_output=True,
                                                    env={**os.environ, **dict(JS.env)}).returncode == 0
    return "passed" if found else "runtime_error"


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(timeout_s=10.0)


@pytest.fixture(scope="module")
def humaneval_x(shared_dir):
    return shared_dir / "data" / "humaneval-x"


def run_canonical(task, sandbox, limit=None):
    problems = task.problems(limit)
    results = sandbox.run([task.program(p, p.canonical_solution) for p in problems])
    return {p.task_id: r for p, r in zip(problems, results, strict=False)}


def expected_status(task_id: str) -> str:
    if task_id == "JavaScript/162":
        return js_md5_status()
    return KNOWN_BAD.get(task_id, ("passed", ""))[0]


def check_all(results):
    wrong = {t: (r.status, r.stderr[-300:]) for t, r in results.items() if r.status != expected_status(t)}
    assert not wrong


def test_humaneval_canonical_164_of_164(sandbox):
    results = run_canonical(load_task("humaneval"), sandbox)
    assert len(results) == 164
    assert all(r.status == "passed" for r in results.values())


@pytest.mark.parametrize("language", ["python", "js"])
def test_humaneval_x_canonical_fast_languages(language, humaneval_x, sandbox):
    if not get_language(language).available():
        pytest.skip(f"{language} toolchain missing")
    results = run_canonical(load_task(f"humaneval-x:{language}", str(humaneval_x)), sandbox)
    assert len(results) == 82
    check_all(results)


@pytest.mark.parametrize(("language", "limit"), [("java", 12), ("cpp", 3)])
def test_humaneval_x_canonical_subset(language, limit, humaneval_x, sandbox):
    if not get_language(language).available():
        pytest.skip(f"{language} toolchain missing")
    task = load_task(f"humaneval-x:{language}", str(humaneval_x))
    check_all(run_canonical(task, sandbox, limit))


@pytest.mark.slow
@pytest.mark.parametrize("language", ["java", "cpp"])
def test_humaneval_x_canonical_all(language, humaneval_x, sandbox):
    if not get_language(language).available():
        pytest.skip(f"{language} toolchain missing")
    results = run_canonical(load_task(f"humaneval-x:{language}", str(humaneval_x)), sandbox)
    assert len(results) == 82
    check_all(results)


WRONG = {  # problem 0 (has_close_elements): valid code with a wrong answer, a syntax error, an endless loop
    "python": ("    return False\n", "    return (\n", "    while True:\n        pass\n"),
    "java": ("        return false;\n    }\n}\n", "        return false\n    }\n}\n",
             "        while (true) {}\n    }\n}\n"),
    "js": ("  return false\n}\n", "  return (\n}\n", "  while (true) {}\n}\n"),
    "cpp": ("    return false;\n}\n", "    return false\n}\n", "    while (true) {}\n}\n"),
}


def test_wrong_solutions_fail_with_the_right_status(humaneval_x):
    languages = [lang for lang in WRONG if get_language(lang).available()]
    programs, expected = [], []
    for language in languages:
        task = load_task(f"humaneval-x:{language}", str(humaneval_x))
        problem = task.problems(1)[0]
        for completion, status in zip(WRONG[language], ("failed", "compile_error", "timeout"), strict=False):
            programs.append(task.program(problem, completion))
            expected.append((language, status))
    results = Sandbox(timeout_s=2.0).run(programs)
    assert [(lang, r.status) for (lang, _), r in zip(expected, results, strict=False)] == expected


RIGHT_AND_WRONG = {  # HumanEval_2_truncate_number, completions as a model would stop them
    "java": ("        return number % 1.0f;", "        return 0.0f;"),
    "js": ("  return number % 1.0;\n}\n", "  return 0;\n}\n"),
    "cpp": ("    return number - (int)number;", "    return 0;"),
}


FIRST_STOP = {"java": "\n    }\n", "js": "\nfunction ", "cpp": "\n}"}


@pytest.mark.parametrize("language", sorted(RIGHT_AND_WRONG))
def test_multipl_e_programs(language, shared_dir, sandbox):
    if not get_language(language).available():
        pytest.skip(f"{language} toolchain missing")
    task = load_task(f"multipl-e:{language}", str(shared_dir / "data" / "multipl-e"))
    assert len(task.problems()) == 79 and task.protocol()["dataset_sha256"]
    [problem] = [p for p in task.problems() if p.task_id == "HumanEval_2_truncate_number"]
    assert problem.stop_sequences[0] == FIRST_STOP[language]  # the dataset's own stop tokens
    right, wrong = RIGHT_AND_WRONG[language]
    assert task.truncate(problem, right + problem.stop_sequences[0] + "junk") == right
    results = sandbox.run([task.program(problem, right), task.program(problem, wrong)])
    assert [r.status for r in results] == ["passed", "failed"], results[0].stderr[-500:]
