"""Execute untrusted generated programs in parallel, isolated, with limits; one runner for every language.

How: programs are grouped by language into batches; each batch runs in one bubblewrap launch
(`sandbox_runner.py` inside), and batches run in parallel on all cores. Inside a launch every program gets
a fresh directory of its own, a scrubbed environment (built from scratch: PATH, HOME=its dir, locale), its
own process group, rlimits (CPU seconds, memory, processes, file size, open files), output capped through
RLIMIT_FSIZE on the files its stdout/stderr go to, and a wall-clock limit after which it and everything it
started are SIGKILLed. Languages that compile (javac) compile the whole batch with one compiler call.

Protects against (tested in tests/evaluate/test_hostile.py):
- network access: new network namespace with only a downed loopback;
- writing or deleting outside its directory: `/` is bind-mounted read-only, /tmp is a private tmpfs, and
  the parent's $HOME (and /root) is hidden behind an empty tmpfs (toolchains living there are re-exposed
  read-only);
- reading the parent's secrets: the environment is rebuilt from scratch; the pid namespace hides the
  parent's /proc/<pid>/environ;
- fork bombs and stray background processes: own pid namespace; when the host runs as root (CI), each
  program runs under its own unprivileged uid, so RLIMIT_NPROC applies (root ignores it) and programs cannot
  read each other's directories; after each program every process left in the namespace is killed, and the
  whole namespace dies with the launch (--die-with-parent);
- runaway CPU, memory, output, file size and descriptor use: rlimits; memory is RLIMIT_AS, or RLIMIT_DATA plus
  a managed-heap flag for the JVM and V8, which reserve address space they never use.

Does not protect against: kernel exploits and side channels; reading world-readable files outside $HOME
(the file system is visible read-only); CPU and memory contention between parallel programs (no cgroups);
a program that spins until the CPU limit on each of the batch's programs in turn (it is bounded, not
prevented). Without root, programs share the caller's uid: RLIMIT_NPROC then counts all the caller's
processes, so it is set to their current count plus a margin. With `unshare` only (no bubblewrap) the file
system is the host's, writable wherever the program's uid may write. With neither, execution is refused
unless `allow_unsafe` is set.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from codetune.errors import SandboxError
from codetune.evaluate.failures import classify
from codetune.evaluate.languages import Language, get_language, python_executable, resolve_tool, toolchain_roots

RUNNER = Path(__file__).with_name("sandbox_runner.py")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UID_BASE = 100_000  # programs run as UID_BASE + (pid % 4096) * 2**18 + slot * 1024 + index when root
RUNTIME_OVERHEAD_MB = 512  # native memory of the JVM / V8 on top of their managed heap


@dataclass
class Program:
    language: str
    source: str
    file_name: str | None = None  # defaults to the language row's


@dataclass
class Execution:
    status: str
    phase: str = "run"
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_exceeded: bool = False
    duration_s: float = 0.0
    compile_s: float = 0.0
    max_rss_mb: float = 0.0
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sandbox:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    workers: int | None = None
    allow_unsafe: bool = False
    max_output_bytes: int = 1 << 20
    max_processes: int = 64
    excerpt_bytes: int = 4096
    isolation: str = field(init=False, default="")

    def __post_init__(self):
        self.workers = self.workers or os.cpu_count() or 1
        self.isolation = detect_isolation(self.allow_unsafe)
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(min(self.workers, 255)):
            self._slots.put(slot)

    def describe(self) -> dict:
        return {"isolation": self.isolation, "timeout_s": self.timeout_s, "memory_mb": self.memory_mb,
                "max_processes": self.max_processes, "max_output_bytes": self.max_output_bytes,
                "workers": self.workers, "per_program_uid": self._switch_uid}

    @property
    def _switch_uid(self) -> bool:
        return os.geteuid() == 0 and self.isolation in ("bwrap", "unshare", "none")

    def run(self, programs: list[Program], progress=None) -> list[Execution]:
        """Execute every program; results come back in input order. `progress(n)` is called as they finish."""
        by_language: dict[str, list[int]] = defaultdict(list)
        for index, program in enumerate(programs):
            by_language[get_language(program.language).name].append(index)
        batches = []
        for name, indices in by_language.items():
            language = get_language(name)
            missing = [t for t in language.tools if resolve_tool(t) is None]
            if missing:
                raise SandboxError(f"cannot run {name} programs: {', '.join(missing)} not found on PATH")
            size = max(1, min(language.batch_size, 1000, math.ceil(len(indices) / self.workers)))
            batches += [(language, indices[i:i + size]) for i in range(0, len(indices), size)]
        # Slow batches (compiled languages) first, so the pool does not end on a lone long batch.
        batches.sort(key=lambda b: -(b[0].compile_timeout_s if b[0].compile else 0) * len(b[1]))
        results: list[Execution | None] = [None] * len(programs)

        def work(batch):
            language, indices = batch
            slot = self._slots.get()
            try:
                for index, execution in self._run_batch(language, [(i, programs[i]) for i in indices], slot):
                    results[index] = execution
                    if progress:
                        progress(1)
            finally:
                self._slots.put(slot)

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(work, batches))
        return [r or Execution(status="harness_error", stderr="no result") for r in results]

    # --- one launch -------------------------------------------------------------------------------------
    def _run_batch(self, language: Language, items: list[tuple[int, Program]], slot: int):
        root = Path(tempfile.mkdtemp(prefix="codetune-exec-"))
        try:
            manifest = self._prepare(language, items, root, slot)
            yield from self._launch(language, items, root, manifest)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _uid(self, slot: int, index: int) -> int | None:
        if not self._switch_uid:
            return None
        return UID_BASE + (os.getpid() % 4096) * (1 << 18) + slot * 1024 + index

    def _limits(self, language: Language, *, compile_step: bool) -> dict:
        if compile_step:
            return {"cpu_s": language.compile_timeout_s, "mem_bytes": 4 << 30, "mem_kind": "data",
                    "nproc": 512 + self._nproc_margin(), "fsize": 256 << 20, "nofile": 1024}
        managed = language.memory_rlimit == "data"
        memory_mb = self.memory_mb + (RUNTIME_OVERHEAD_MB if managed else 0)
        return {"cpu_s": self.timeout_s + 1, "mem_bytes": memory_mb << 20, "mem_kind": language.memory_rlimit,
                "nproc": self.max_processes + (32 if managed else 0) + self._nproc_margin(),
                "fsize": self.max_output_bytes, "nofile": 256}

    def _nproc_margin(self) -> int:
        # RLIMIT_NPROC counts every task of the uid; without our own uids that includes the caller's.
        return 0 if self._switch_uid else _tasks_of_uid(os.getuid())

    def _prepare(self, language: Language, items, root: Path, slot: int) -> dict:
        control = root / "control"
        (control / "out").mkdir(parents=True, mode=0o700)
        shutil.copyfile(RUNNER, control / "runner.py")
        os.chmod(root, 0o755)
        compile_uid = self._uid(slot, 1023)
        classes = root / "classes"
        batch_files = {}
        specs = []
        for index, (_, program) in enumerate(items):
            uid = self._uid(slot, index)
            workdir = root / f"p{index}"
            workdir.mkdir(mode=0o700)
            file_name = program.file_name or language.file_name
            stem = Path(file_name).stem
            if language.batch_compile:
                src = root / "src" / f"p{index}" / file_name
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_text(language.batch_prefix.format(unit=f"p{index}") + program.source, encoding="utf-8")
                batch_files[str(src.relative_to(root / "src"))] = index
                main = f"p{index}.{stem}"
            else:
                (workdir / file_name).write_text(program.source, encoding="utf-8")
                main = stem
            values = {"file": file_name, "exe": str(workdir / stem), "main": main, "out": str(classes),
                      "heap_mb": str(self.memory_mb), "python": python_executable()}
            env = {"PATH": SAFE_PATH, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "2", **dict(language.env)}
            run = {"argv": _expand(language.run, values), "cwd": str(workdir), "uid": uid, "env": env,
                   "timeout_s": self.timeout_s, "limits": self._limits(language, compile_step=False)}
            if language.fork_python:
                run["python_file"] = str(workdir / file_name)
            spec = {"id": index, "run": run, "compile": None}
            if language.compile and not language.batch_compile:
                spec["compile"] = dict(run, argv=_expand(language.compile, values), python_file=None,
                                       timeout_s=language.compile_timeout_s,
                                       limits=self._limits(language, compile_step=True))
            if uid is not None:
                os.chown(workdir, uid, uid)
            specs.append(spec)
        manifest = {"own_pid_namespace": self.isolation != "none", "out_dir": str(control / "out"),
                    "excerpt_bytes": self.excerpt_bytes, "programs": specs, "batch_compile": None}
        if language.batch_compile:
            classes.mkdir(mode=0o755)
            argv = _expand(language.compile, {"out": str(classes), "files": "{files}"})
            split = argv.index("{files}")
            manifest["batch_compile"] = {
                "argv_head": argv[:split], "argv_tail": argv[split + 1:], "files": batch_files,
                "cwd": str(root / "src"), "uid": compile_uid,
                "env": {"PATH": SAFE_PATH, "HOME": str(root / "src"), "TMPDIR": str(root / "src"),
                        "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2"},
                "timeout_s": language.compile_timeout_s, "limits": self._limits(language, compile_step=True)}
            if compile_uid is not None:
                for path in (root / "src", classes):
                    os.chown(path, compile_uid, compile_uid)
        (control / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        return manifest

    def _launch(self, language: Language, items, root: Path, manifest: dict):
        control = root / "control"
        argv = _wrap(self.isolation, root, toolchain_roots(language)) + [
            python_executable(), "-I", "-S", str(control / "runner.py"), str(control / "manifest.json")]
        per_program = self.timeout_s + 2 + (language.compile_timeout_s if language.compile else 0)
        backstop = 30 + len(items) * per_program + (2 * language.compile_timeout_s if language.batch_compile else 0)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, start_new_session=True, text=True)
        watchdog = threading.Timer(backstop, _kill_group, args=(proc,))
        watchdog.start()
        seen = set()
        try:
            for line in proc.stdout:
                record = json.loads(line)
                index = record.pop("id")
                seen.add(index)
                yield items[index][0], self._execution(language, record)
            stderr = proc.stderr.read()
            proc.wait()
        finally:
            watchdog.cancel()
            _kill_group(proc)
        for index, (global_index, _) in enumerate(items):
            if index not in seen:
                yield global_index, Execution(status="harness_error", stderr=stderr[-self.excerpt_bytes:] or
                                              f"sandbox exited with {proc.returncode}")

    def _execution(self, language: Language, record: dict) -> Execution:
        record.setdefault("compile_s", 0.0)
        status = classify(language, phase=record["phase"], exit_code=record["exit_code"], signal=record["signal"],
                          timed_out=record["timed_out"], output_exceeded=record["output_exceeded"],
                          stderr=record["stderr"])
        return Execution(status=status, **record)


def _expand(template: tuple[str, ...], values: dict) -> list[str]:
    argv = [part.format(**values) if "{" in part else part for part in template]
    resolved = resolve_tool(template[0]) if not template[0].startswith("{") else None
    return [resolved or argv[0]] + argv[1:]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _tasks_of_uid(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                continue
    return count + 256


def _hidden_homes() -> list[str]:
    homes = {os.path.realpath(os.path.expanduser("~"))}
    if os.geteuid() == 0:
        homes.add("/root")
    return sorted(h for h in homes if h not in ("/", "") and os.path.isdir(h))


def _wrap(isolation: str, root: Path, tool_roots: list[str]) -> list[str]:
    """The command prefix that isolates one launch."""
    if isolation == "bwrap":
        if os.geteuid() == 0:  # no user namespace, so that programs can get their own uid (RLIMIT_NPROC)
            args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                    "--unshare-cgroup-try", "--cap-add", "CAP_SETUID,CAP_SETGID,CAP_KILL"]
        else:
            args = ["bwrap", "--unshare-all"]
        args += ["--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                 "--tmpfs", "/tmp"]
        homes = _hidden_homes()
        for home in homes:
            args += ["--tmpfs", home]
        # Re-expose toolchains that live under a hidden home (pyenv, rustup) by their top directory there,
        # so that every directory on the way keeps its real permissions.
        needed = set()
        for path in {os.path.realpath(python_executable()).rsplit("/bin/", 1)[0], *tool_roots}:
            for home in homes:
                if path.startswith(home + "/"):
                    needed.add(home + "/" + path[len(home) + 1:].split("/", 1)[0])
        for path in sorted(needed):
            args += ["--ro-bind", path, path]
        return args + ["--bind", str(root), str(root), "--chdir", str(root), "--"]
    if isolation == "unshare":
        args = ["unshare", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
        return args + ([] if os.geteuid() == 0 else ["--map-root-user"]) + ["--"]
    return []


@cache
def detect_isolation(allow_unsafe: bool = False) -> str:
    """bwrap if it works here, else unshare, else "none" when allowed; otherwise raise SandboxError."""
    probe = tempfile.mkdtemp(prefix="codetune-probe-")
    try:
        for kind in ("bwrap", "unshare"):
            if shutil.which(kind) is None:
                continue
            argv = _wrap(kind, Path(probe), []) + [python_executable(), "-I", "-S", "-c", "pass"]
            try:
                done = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": SAFE_PATH})
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode == 0:
                return kind
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if allow_unsafe:
        return "none"
    raise SandboxError("cannot isolate generated code here (bubblewrap and unshare both failed): install "
                       "bubblewrap (apt-get install bubblewrap) or pass --allow-unsafe to run without isolation")
