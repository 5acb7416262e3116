"""The executor that runs *inside* one sandbox launch and executes a batch of programs, one after another.

`sandbox.py` copies this file into a batch directory and starts it as `python -I -S runner.py manifest.json`
under bubblewrap. It uses the standard library only (no codetune import: the sandbox hides site-packages).
For each program it forks a child that moves into its own process group, takes the program's own uid (when
the host runs as root), sets the program's rlimits, changes into the program's fresh directory and either
execs the program's command or, for Python, runs the file in the forked interpreter (as `python -I -S` would,
without paying an interpreter start-up). The parent enforces the wall-clock limit, then kills every process
left in the sandbox's pid namespace before the next program starts, so nothing a program leaves behind can
touch the next one. One JSON line per program goes to stdout.

Languages with `batch_compile` are compiled with one compiler call for the whole batch; a program whose file
the compiler blames is reported as a compile failure and the rest are compiled again.
"""

import io
import json
import math
import os
import re
import resource
import select
import signal
import sys
import time
import traceback
import types

# Modules most generated Python imports, loaded once here so that each forked program does not pay for them
# (`random` is left out: forked children would share its seed).
PRELOAD = ("typing", "collections", "itertools", "functools", "heapq", "bisect", "string", "hashlib", "fractions")

LIMITS = {"cpu_s": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC, "fsize": resource.RLIMIT_FSIZE,
          "nofile": resource.RLIMIT_NOFILE}
DIAGNOSTIC = re.compile(r"(?m)^(\S[^\n:]*):\d+:")


def set_limits(limits):
    for key, which in LIMITS.items():
        value = limits.get(key)
        if value is not None:
            value = int(math.ceil(value))
            hard = value + 1 if key == "cpu_s" else value  # SIGXCPU first, SIGKILL a second later
            resource.setrlimit(which, (value, hard))
    if limits.get("mem_bytes"):
        which = resource.RLIMIT_DATA if limits.get("mem_kind") == "data" else resource.RLIMIT_AS
        resource.setrlimit(which, (limits["mem_bytes"], limits["mem_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def precompile(path):
    """Compile a Python program here, before the fork: in the child every page the compiler touches would be
    a copy-on-write fault (the bulk of a short program's cost). Anything unusual is left to the child, which
    reports it as the interpreter would."""
    try:
        with open(path, "rb") as f:
            return compile(f.read(), path, "exec", dont_inherit=True)
    except BaseException:  # noqa: BLE001 - SyntaxError, MemoryError, RecursionError...
        return None


def run_python_here(path, code_object):
    """Run `path` as `python -I -S path` would, in this (forked) interpreter; returns the exit code."""
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the child
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path))
    main = types.ModuleType("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main
    code = 0
    try:
        if code_object is None:
            with open(path, "rb") as f:
                code_object = compile(f.read(), path, "exec", dont_inherit=True)
        exec(code_object, main.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # noqa: BLE001 - report like the interpreter does, without our frames
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - output limit reached while flushing
            pass
    return code & 0xFF


def child(spec, out_fd, err_fd, code_object):
    """In the forked child: isolate, limit, then become the program. Never returns."""
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, 65536)
        os.umask(0o022)
        set_limits(spec["limits"])
        uid = spec.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(spec["cwd"])
        os.environ.clear()
        os.environ.update(spec["env"])
        if spec.get("python_file"):
            os._exit(run_python_here(spec["python_file"], code_object))
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:  # noqa: BLE001
        os.write(2, f"codetune-runner: could not start program: {exc!r}\n".encode())
    os._exit(127)


def kill_leftovers(manifest, pid):
    """Kill the program's process group and, in our own pid namespace, every process but us and init."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if not manifest["own_pid_namespace"]:
        return
    me = os.getpid()
    for _ in range(200):
        alive = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (1, me):
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state in "ZX":
                continue
            alive += 1
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
        reap()
        if not alive:
            return
        time.sleep(0.002)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_with_deadline(pid, timeout_s):
    """Wait for `pid` up to `timeout_s`; returns (wait status, rusage, timed_out)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    deadline = time.monotonic() + timeout_s
    timed_out = False
    if fd is not None:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        os.close(fd)
        timed_out = not ready
    else:
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.002)
    if timed_out:
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage, timed_out


def excerpt(path, limit):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        if size <= limit:
            data = f.read()
        else:  # the head says what started going wrong, the tail holds the traceback
            data = f.read(limit // 4) + b"\n[...]\n"
            f.seek(size - (limit - limit // 4))
            data += f.read()
    return data.decode("utf-8", "replace"), size


def spawn(manifest, spec, tag, limit=None):
    out_path = os.path.join(manifest["out_dir"], tag + ".out")
    err_path = os.path.join(manifest["out_dir"], tag + ".err")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out_fd, err_fd = os.open(out_path, flags, 0o600), os.open(err_path, flags, 0o600)
    code_object = precompile(spec["python_file"]) if spec.get("python_file") else None
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(spec, out_fd, err_fd, code_object)
    os.close(out_fd)
    os.close(err_fd)
    status, usage, timed_out = wait_with_deadline(pid, spec["timeout_s"])
    duration = time.monotonic() - start
    kill_leftovers(manifest, pid)
    limit = limit or manifest["excerpt_bytes"]
    stdout, out_size = excerpt(out_path, limit // 4)
    stderr, err_size = excerpt(err_path, limit)
    os.unlink(out_path)
    os.unlink(err_path)
    fsize = spec["limits"].get("fsize") or float("inf")
    return {
        "exit_code": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "duration_s": round(duration, 4),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "output_exceeded": max(out_size, err_size) >= fsize,
        "stdout": stdout,
        "stderr": stderr,
    }


def blame(output, files):
    """Map compiler diagnostics to the files they name: {file: its part of the output}."""
    parts = {}
    current = None
    for line in output.splitlines(keepends=True):
        match = DIAGNOSTIC.match(line)
        if match and match.group(1) in files:
            current = match.group(1)
        elif match:
            current = None
        if current is not None:
            parts[current] = parts.get(current, "") + line
    return parts


def compile_batch(manifest, batch):
    """Compile the batch with as few compiler calls as possible; returns {program id: failed result}."""
    failed = {}
    remaining = dict(batch["files"])  # file -> program id
    for attempt in range(6):
        if not remaining:
            return failed
        spec = dict(batch, argv=batch["argv_head"] + sorted(remaining) + batch["argv_tail"])
        result = spawn(manifest, spec, f"compile-{attempt}", limit=1 << 24)
        if result["exit_code"] == 0 and not result["timed_out"]:
            return failed
        parts = blame(result["stderr"] + result["stdout"], remaining)
        if not parts or result["timed_out"] or result["output_exceeded"]:
            break
        for path, text in parts.items():
            failed[remaining.pop(path)] = dict(result, stderr=text, stdout="", duration_s=0.0)
    for path, program_id in sorted(remaining.items()):  # could not tell who broke the build: one at a time
        spec = dict(batch, argv=batch["argv_head"] + [path] + batch["argv_tail"])
        result = spawn(manifest, spec, f"compile-{program_id}")
        if result["exit_code"] != 0 or result["timed_out"]:
            failed[program_id] = result
    return failed


_last_flush = [0.0]


def emit(record):
    # Flushing at most every 0.1 s spares the host a wake-up per program.
    sys.stdout.write(json.dumps(record) + "\n")
    if time.monotonic() - _last_flush[0] > 0.1:
        sys.stdout.flush()
        _last_flush[0] = time.monotonic()


def main(manifest_path):
    # Python ignores SIGPIPE and SIGXFSZ; programs must get the defaults (SIGXFSZ ends runaway output).
    # Set here once rather than in each child: every page a child touches is a copy-on-write fault.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    with open(manifest_path) as f:
        manifest = json.load(f)
    if any(p["run"].get("python_file") for p in manifest["programs"]):
        for name in PRELOAD:
            __import__(name)
    compile_failed = {}
    batch = manifest.get("batch_compile")
    if batch:
        start = time.monotonic()
        compile_failed = compile_batch(manifest, batch)
        share = (time.monotonic() - start) / max(1, len(manifest["programs"]))
    for program in manifest["programs"]:
        pid = program["id"]
        if pid in compile_failed:
            emit(dict(compile_failed[pid], id=pid, phase="compile"))
            continue
        compile_s = share if batch else 0.0
        if program.get("compile"):
            result = spawn(manifest, program["compile"], f"{pid}-compile")
            compile_s = result["duration_s"]
            if result["exit_code"] != 0 or result["timed_out"]:
                emit(dict(result, id=pid, phase="compile"))
                continue
        result = spawn(manifest, program["run"], f"{pid}-run")
        emit(dict(result, id=pid, phase="run", compile_s=round(compile_s, 4)))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
