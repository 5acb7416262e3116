"""One status vocabulary for every language, and the pure function that assigns it from what a run left.

passed             ran, exit 0, no failed assertion
failed             a test assertion failed (wrong answer)
runtime_error      crashed any other way (exception, non-zero exit, signal)
compile_error      the compiler rejected it, or the interpreter found a syntax error
timeout            wall-clock or CPU-time limit
memory_exceeded    hit the memory limit (MemoryError, bad_alloc, OutOfMemoryError, V8 heap limit, OOM kill)
sandbox_violation  ran into the sandbox: output or file-size cap, read-only file system, no network,
                   process limit, permission denied
harness_error      the harness itself failed (program could not be started, sandbox died)
"""

from __future__ import annotations

import re
import signal as signals

from codetune.evaluate.languages import Language

STATUSES = ("passed", "failed", "runtime_error", "compile_error", "timeout", "memory_exceeded",
            "sandbox_violation", "harness_error")
HARNESS_MARKER = "codetune-runner:"


def classify(
    language: Language,
    *,
    phase: str,
    exit_code: int | None,
    signal: int | None = None,
    timed_out: bool = False,
    output_exceeded: bool = False,
    stderr: str = "",
) -> str:
    """Status of one execution from its phase ("compile" or "run"), exit code or signal, and stderr."""
    if output_exceeded or signal == signals.SIGXFSZ:  # runtimes that ignore SIGXFSZ spin until the timeout
        return "sandbox_violation"
    if timed_out or signal == signals.SIGXCPU:
        return "timeout"
    if stderr.startswith(HARNESS_MARKER):
        return "harness_error"
    if phase == "compile":
        return "compile_error" if exit_code != 0 or signal is not None else "passed"
    if exit_code == 0 and signal is None:
        if any(re.search(p, stderr) for p in language.soft_failures):
            return "failed"
        return "passed"
    for pattern, status in language.patterns:
        if re.search(pattern, stderr):
            return status
    if signal == signals.SIGKILL:  # not our timeout kill: the kernel's OOM killer
        return "memory_exceeded"
    return "runtime_error"
