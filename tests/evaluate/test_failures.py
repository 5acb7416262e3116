"""failures.classify on crafted outputs, per language."""

import signal

import pytest

from codetune.evaluate.failures import classify
from codetune.evaluate.languages import CPP, JAVA, JS, PYTHON

PY_ASSERT = ('Traceback (most recent call last):\n  File "main.py", line 3, in <module>\n'
             '    assert f(1) == 2\nAssertionError\n')
PY_SYNTAX = '  File "main.py", line 1\n    def f(:\n          ^\nSyntaxError: invalid syntax\n'
PY_MEMORY = 'Traceback (most recent call last):\n  File "main.py", line 1, in <module>\nMemoryError\n'
PY_TYPE = "Traceback (most recent call last):\nTypeError: unsupported operand type(s)\n"
PY_NET = "Traceback (most recent call last):\nOSError: [Errno 101] Network is unreachable\n"
PY_ROFS = "Traceback (most recent call last):\nOSError: [Errno 30] Read-only file system: '/x'\n"
JAVA_ASSERT = 'Exception in thread "main" java.lang.AssertionError\n\tat Main.main(Main.java:9)\n'
JAVA_OOM = 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space\n'
JAVA_NPE = 'Exception in thread "main" java.lang.NullPointerException\n'
JS_ASSERT = "AssertionError [ERR_ASSERTION]: Expected values to be strictly deep-equal\n"
JS_SYNTAX = "/tmp/p0/main.js:3\n  return (\n         ^\n\nSyntaxError: Unexpected token '}'\n"
JS_HEAP = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n"
CPP_ASSERT = "main: main.cpp:12: int main(): Assertion `issame(f(1), {1})' failed.\n"
CPP_ALLOC = "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc\n"


@pytest.mark.parametrize(
    ("language", "kwargs", "expected"),
    [
        (PYTHON, dict(exit_code=0), "passed"),
        (PYTHON, dict(exit_code=1, stderr=PY_ASSERT), "failed"),
        (PYTHON, dict(exit_code=1, stderr=PY_SYNTAX), "compile_error"),
        (PYTHON, dict(exit_code=1, stderr=PY_MEMORY), "memory_exceeded"),
        (PYTHON, dict(exit_code=1, stderr=PY_TYPE), "runtime_error"),
        (PYTHON, dict(exit_code=1, stderr=PY_NET), "sandbox_violation"),
        (PYTHON, dict(exit_code=1, stderr=PY_ROFS), "sandbox_violation"),
        (PYTHON, dict(exit_code=None, signal=signal.SIGKILL, timed_out=True), "timeout"),
        (PYTHON, dict(exit_code=None, signal=signal.SIGXCPU), "timeout"),
        (PYTHON, dict(exit_code=None, signal=signal.SIGXFSZ), "sandbox_violation"),
        (PYTHON, dict(exit_code=1, output_exceeded=True), "sandbox_violation"),
        (JS, dict(exit_code=None, signal=signal.SIGKILL, timed_out=True, output_exceeded=True), "sandbox_violation"),
        (PYTHON, dict(exit_code=None, signal=signal.SIGKILL), "memory_exceeded"),
        (PYTHON, dict(exit_code=127, stderr="codetune-runner: could not start program: OSError()"), "harness_error"),
        (JAVA, dict(phase="compile", exit_code=1, stderr="Main.java:3: error: ';' expected"), "compile_error"),
        (JAVA, dict(exit_code=1, stderr=JAVA_ASSERT), "failed"),
        (JAVA, dict(exit_code=1, stderr=JAVA_OOM), "memory_exceeded"),
        (JAVA, dict(exit_code=1, stderr=JAVA_NPE), "runtime_error"),
        (JAVA, dict(exit_code=1, stderr='java.net.SocketException: Network is unreachable'), "sandbox_violation"),
        (JS, dict(exit_code=0, stderr="Assertion failed\n"), "failed"),  # console.assert exits 0
        (JS, dict(exit_code=1, stderr=JS_ASSERT), "failed"),
        (JS, dict(exit_code=1, stderr=JS_SYNTAX), "compile_error"),
        (JS, dict(exit_code=None, signal=signal.SIGABRT, stderr=JS_HEAP), "memory_exceeded"),
        (JS, dict(exit_code=1, stderr="ReferenceError: x is not defined"), "runtime_error"),
        (CPP, dict(phase="compile", exit_code=1, stderr="main.cpp:1:20: error: 'x' was not declared"),
         "compile_error"),
        (CPP, dict(exit_code=None, signal=signal.SIGABRT, stderr=CPP_ASSERT), "failed"),
        (CPP, dict(exit_code=None, signal=signal.SIGABRT, stderr=CPP_ALLOC), "memory_exceeded"),
        (CPP, dict(exit_code=None, signal=signal.SIGSEGV), "runtime_error"),
        (CPP, dict(exit_code=1, stderr="connect: Network is unreachable\n"), "sandbox_violation"),
    ],
)
def test_classify(language, kwargs, expected):
    kwargs.setdefault("phase", "run")
    assert classify(language, **kwargs) == expected
