"""The language table: everything the sandbox and the tasks need to know about a language, one row each.

A row says which file the program goes in, how to compile it (optional) and run it, the stop sequences a
model's completion is cut at, how memory is limited, and the stderr patterns that tell one failure from
another. Adding a language is adding a row; `sandbox.py` and `failures.py` only read rows.

Argument templates use these placeholders, filled in by the sandbox:
  {file} source file name, {exe} compiled binary, {main} entry class (Java), {out} class output directory,
  {files} every source file of a batch compile (expands to many arguments), {heap_mb} memory for managed
  heaps, {python} the interpreter running codetune.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

JAVATUPLES_JAR = "/usr/share/java/javatuples.jar"

# JVM start-up flags: one GC thread, C1 only and no perf-data file keep a short run short (≈70 ms) and its
# virtual reservation small; memory is bounded by -Xmx plus RLIMIT_DATA (RLIMIT_AS breaks the JVM, which
# reserves ~1 GB of address space it never touches).
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto")


@dataclass(frozen=True)
class Language:
    name: str
    file_name: str
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    stop_sequences: tuple[str, ...] = ()
    # "as" limits address space; "data" limits private writable memory (for runtimes that reserve huge
    # address ranges up front: the JVM and V8).
    memory_rlimit: str = "as"
    # Compile many programs with one compiler call ({files}); each program goes in its own package `unit`,
    # declared by `batch_prefix` at the top of its source, so that programs do not collide.
    batch_compile: bool = False
    batch_prefix: str = ""
    # Python programs can run in a process forked from the sandbox's warm interpreter instead of a fresh one.
    fork_python: bool = False
    # Programs per sandbox launch: large where one compiler start is shared, small where compiling is slow.
    batch_size: int = 32
    compile_timeout_s: float = 60.0
    # Failure patterns (regex, status) tried in order on stderr (+stdout) of a failed run; see failures.py.
    patterns: tuple[tuple[str, str], ...] = ()
    # Patterns that mean failure even when the exit code is 0 (console.assert only prints).
    soft_failures: tuple[str, ...] = ()
    tools: tuple[str, ...] = field(default=())
    env: tuple[tuple[str, str], ...] = ()  # extra variables of the run, e.g. where shared libraries live

    def available(self) -> bool:
        """True when every tool this row needs is on PATH."""
        return all(resolve_tool(t) is not None for t in self.tools)


_SANDBOX_PATTERNS = (
    (r"Read-only file system|EROFS", "sandbox_violation"),
    (r"Network is unreachable|ENETUNREACH|Temporary failure in name resolution|EAI_AGAIN|"
     r"UnknownHostException|ENOTFOUND|Name or service not known", "sandbox_violation"),
    (r"Permission denied|EACCES|Operation not permitted|EPERM", "sandbox_violation"),
    (r"Resource temporarily unavailable|BlockingIOError|EAGAIN|unable to create native thread", "sandbox_violation"),
)

PYTHON = Language(
    name="python",
    file_name="main.py",
    run=("{python}", "-I", "-S", "{file}"),
    stop_sequences=("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
    fork_python=True,
    batch_size=48,
    patterns=(
        (r"(?m)^MemoryError", "memory_exceeded"),
        (r"(?m)^(SyntaxError|IndentationError|TabError)\b", "compile_error"),
        (r"(?m)^AssertionError\b", "failed"),
        *_SANDBOX_PATTERNS,
    ),
    tools=("{python}",),
)

JAVA = Language(
    name="java",
    file_name="Main.java",
    compile=("javac", "-J-Xmx1g", *(f"-J{f}" for f in _JVM_FLAGS), "-nowarn", "-proc:none", "-g:none",
             "-encoding", "UTF-8", "-Xmaxerrs", "100000", "-cp", JAVATUPLES_JAR, "-d", "{out}", "{files}"),
    batch_compile=True,
    batch_prefix="package {unit};\n",
    run=("java", "-ea", *_JVM_FLAGS, "-Xmx{heap_mb}m", "-Xss16m", "-XX:ReservedCodeCacheSize=32m",
         "-XX:CompressedClassSpaceSize=64m", "-XX:MaxMetaspaceSize=128m", "-XX:ErrorFile=/dev/null",
         "-cp", "{out}:" + JAVATUPLES_JAR, "{main}"),
    stop_sequences=("\n    }\n",),
    memory_rlimit="data",
    batch_size=96,
    compile_timeout_s=240.0,
    patterns=(
        (r"OutOfMemoryError(?!: unable to create native thread)|insufficient memory for the Java Runtime",
         "memory_exceeded"),
        (r"java\.lang\.AssertionError", "failed"),
        (r"java\.net\.\w*Exception|java\.nio\.file\.(ReadOnlyFileSystem|AccessDenied)Exception",
         "sandbox_violation"),
        *_SANDBOX_PATTERNS,
    ),
    tools=("javac", "java"),
)

JS = Language(
    name="js",
    file_name="main.js",
    run=("node", "--max-old-space-size={heap_mb}", "{file}"),
    stop_sequences=("\nfunction ", "\n/*", "\n//", "\nconsole.log"),
    memory_rlimit="data",
    batch_size=16,
    patterns=(
        (r"heap out of memory|Reached heap limit|Array buffer allocation failed|Invalid array length|"
         r"Invalid string length|ERR_STRING_TOO_LONG", "memory_exceeded"),
        (r"(?m)^SyntaxError:", "compile_error"),
        (r"AssertionError|ERR_ASSERTION|Assertion failed", "failed"),
        *_SANDBOX_PATTERNS,
    ),
    soft_failures=(r"(?m)^Assertion failed",),
    tools=("node",),
    # Global npm packages (setup installs js-md5, which HumanEval-X JavaScript/162 requires).
    env=(("NODE_PATH", "/usr/local/lib/node_modules:/usr/lib/node_modules"),),
)

CPP = Language(
    name="cpp",
    file_name="main.cpp",
    compile=("g++", "-std=c++17", "-O1", "-pipe", "{file}", "-o", "{exe}", "-lcrypto"),
    run=("{exe}",),
    stop_sequences=("\n}",),
    batch_size=6,
    compile_timeout_s=120.0,
    patterns=(
        (r"std::bad_alloc|std::length_error|Cannot allocate memory", "memory_exceeded"),
        (r"Assertion [`'].*' failed", "failed"),
        *_SANDBOX_PATTERNS,
    ),
    tools=("g++",),
)

RUST = Language(
    name="rust",
    file_name="main.rs",
    compile=("rustc", "--edition", "2021", "-C", "opt-level=1", "-A", "warnings", "{file}", "-o", "{exe}"),
    run=("{exe}",),
    stop_sequences=("\n}",),
    batch_size=6,
    compile_timeout_s=120.0,
    patterns=(
        (r"memory allocation of \d+ bytes failed|capacity overflow", "memory_exceeded"),
        (r"assertion failed|assertion `left [!=]= right` failed|test result: FAILED", "failed"),
        *_SANDBOX_PATTERNS,
    ),
    tools=("rustc",),
)

LANGUAGES: dict[str, Language] = {row.name: row for row in (PYTHON, JAVA, JS, CPP, RUST)}
ALIASES = {"javascript": "js", "c++": "cpp", "py": "python", "rs": "rust"}


def get_language(name: str) -> Language:
    from codetune.errors import ConfigError

    key = ALIASES.get(name.lower(), name.lower())
    if key not in LANGUAGES:
        raise ConfigError(f"unknown language `{name}`; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[key]


@cache
def python_executable() -> str:
    """The real interpreter behind this process (not a venv or pyenv shim), run with -I -S in the sandbox."""
    return os.path.realpath(sys.executable)


@cache
def resolve_tool(tool: str) -> str | None:
    """Absolute path of a tool, following rustup's proxy to the real toolchain binary."""
    if tool == "{python}":
        return python_executable()
    found = shutil.which(tool)
    if found is None:
        return None
    if tool in ("rustc", "cargo"):
        try:
            sysroot = subprocess.run([found, "--print", "sysroot"], capture_output=True, text=True,
                                     timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        real = Path(sysroot) / "bin" / tool
        return str(real) if real.exists() else None
    return os.path.realpath(found)


def toolchain_roots(language: Language) -> list[str]:
    """Directories a language's tools live in (the sandbox re-exposes them when they sit under $HOME)."""
    roots = []
    for tool in language.tools:
        path = resolve_tool(tool)
        if path is None:
            continue
        if tool == "{python}":
            roots.append(os.path.realpath(sys.base_prefix))
        else:
            roots.append(str(Path(path).parent.parent))  # <prefix>/bin/tool -> <prefix>
    return roots
