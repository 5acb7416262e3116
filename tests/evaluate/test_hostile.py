"""Hostile programs in every language: the host stays untouched, the harness stays alive, the status is right.

Canary files live under /var/tmp (visible, read-only, inside the sandbox); the secret is set in this process's
environment. After the run we check the canaries, look for anything the programs tried to create, and look
for processes left behind (the sandbox uids, the marked `sleep`).
"""

import os
import shutil
import uuid
from pathlib import Path

import pytest

from codetune.evaluate.languages import get_language
from codetune.evaluate.sandbox import UID_BASE, Program, Sandbox

SLEEP_MARK = "4242.5"  # a `sleep` argument nothing else on the host uses


@pytest.fixture
def canary():
    home = Path("/var/tmp") / f"codetune-canary-{uuid.uuid4().hex[:8]}"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("precious")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def python_programs(home: Path, secret: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (source, accepted statuses)."""
    return {
        "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                      {"timeout", "sandbox_violation"}),
        "rm -rf home": (f"import shutil\nshutil.rmtree({str(home)!r})\n", {"sandbox_violation"}),
        "rm -rf ~": ("import subprocess\nsubprocess.run(['rm', '-rf', '/root', '/home'], check=True)\n",
                     {"sandbox_violation"}),
        "write outside": (f"open({str(home / 'pwned')!r}, 'w').write('x')\n", {"sandbox_violation"}),
        "write /tmp": ("open('/tmp/codetune-pwned', 'w').write('x')\n", {"sandbox_violation"}),
        "network": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n", {"sandbox_violation"}),
        "dns": ("import socket\nsocket.getaddrinfo('pypi.org', 443)\n", {"sandbox_violation"}),
        "read parent env": (
            "import os, glob\n"
            "print(dict(os.environ))\n"
            "for path in glob.glob('/proc/*/environ'):\n"
            "    try:\n        print(open(path, 'rb').read())\n    except OSError as e:\n        print(e)\n"
            f"try:\n    print(open('/proc/{os.getpid()}/environ', 'rb').read())\nexcept OSError as e:\n    print(e)\n",
            {"passed"}),
        "allocate": ("blocks = []\nwhile True:\n    blocks.append(bytearray(100_000_000))\n", {"memory_exceeded"}),
        "print forever": ("while True:\n    print('y' * 4096)\n", {"sandbox_violation"}),
        "sleep forever": ("import time\ntime.sleep(10_000)\n", {"timeout"}),
        "background child": ("import subprocess\n"
                             f"subprocess.Popen(['sleep', '{SLEEP_MARK}'], start_new_session=True)\n", {"passed"}),
    }


JAVA = {
    "network": ('public class Main { public static void main(String[] a) throws Exception {'
                ' new java.net.Socket("1.1.1.1", 80); } }', {"sandbox_violation"}),
    "write outside": ('public class Main { public static void main(String[] a) throws Exception {'
                      ' java.nio.file.Files.writeString(java.nio.file.Path.of("HOME/pwned"), "x"); } }',
                      {"sandbox_violation"}),
    "allocate": ('import java.util.*; public class Main { public static void main(String[] a) {'
                 ' List<long[]> l = new ArrayList<>(); while (true) l.add(new long[1 << 20]); } }',
                 {"memory_exceeded"}),
    "spin forever": ('public class Main { public static void main(String[] a) { while (true) {} } }', {"timeout"}),
    "read parent env": ('public class Main { public static void main(String[] a) {'
                        ' System.out.println(System.getenv()); } }', {"passed"}),
}
JS = {
    "network": ("require('net').connect(80, '1.1.1.1')", {"sandbox_violation"}),
    "write outside": ("require('fs').writeFileSync('HOME/pwned', 'x')", {"sandbox_violation"}),
    "allocate": ("const a = []; while (true) a.push(new Array(1e6).fill(1.5))", {"memory_exceeded"}),
    "print forever": ("while (true) process.stdout.write('y'.repeat(4096))", {"sandbox_violation"}),
    "read parent env": ("console.log(JSON.stringify(process.env))", {"passed"}),
}
CPP = {
    "fork bomb": ("#include <unistd.h>\nint main() { while (1) fork(); }", {"timeout", "sandbox_violation"}),
    "write outside": ('#include <cstdio>\nint main() { FILE* f = fopen("HOME/pwned", "w");'
                      ' if (!f) { perror("fopen"); return 1; } }', {"sandbox_violation"}),
    "network": ("#include <arpa/inet.h>\n#include <cstdio>\n#include <sys/socket.h>\n"
                "int main() { int s = socket(AF_INET, SOCK_STREAM, 0); sockaddr_in a{}; a.sin_family = AF_INET;"
                " a.sin_port = htons(80); inet_pton(AF_INET, \"1.1.1.1\", &a.sin_addr);"
                " if (connect(s, (sockaddr*)&a, sizeof a) != 0) { perror(\"connect\"); return 1; } }",
                {"sandbox_violation"}),
    "allocate": ("#include <vector>\nint main() { std::vector<std::vector<char>> v;"
                 " while (true) v.emplace_back(100000000, 'x'); }", {"memory_exceeded"}),
    "sleep forever": ("#include <unistd.h>\nint main() { sleep(10000); }", {"timeout"}),
    "background child": (f'#include <unistd.h>\nint main() {{ if (fork() == 0) {{ setsid();'
                         f' execlp("sleep", "sleep", "{SLEEP_MARK}", (char*)0); }} return 0; }}', {"passed"}),
}


def leftover_processes() -> list[str]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        if SLEEP_MARK in cmdline or uid >= UID_BASE:
            found.append(f"{name} uid={uid} {cmdline}")
    return found


def test_hostile_programs(canary, monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODETUNE_FAKE_SECRET", secret)
    cases = [("python", name, src, ok) for name, (src, ok) in python_programs(canary, secret).items()]
    for language, table in (("java", JAVA), ("js", JS), ("cpp", CPP)):
        if get_language(language).available():
            cases += [(language, name, src.replace("HOME", str(canary)), ok) for name, (src, ok) in table.items()]
    sandbox = Sandbox(timeout_s=2.0, memory_mb=256, max_output_bytes=1 << 20)
    results = sandbox.run([Program(language, src) for language, _, src, _ in cases])

    wrong = [(lang, name, r.status, r.stderr[-300:]) for (lang, name, _, ok), r in zip(cases, results, strict=False)
             if r.status not in ok]
    assert not wrong
    for result in results:
        assert secret not in result.stdout + result.stderr
    assert (canary / ".ssh" / "id_rsa").read_text() == "precious"
    assert not (canary / "pwned").exists() and not Path("/tmp/codetune-pwned").exists()
    assert leftover_processes() == []
    background = [r for (_, name, _, _), r in zip(cases, results, strict=False) if name == "background child"]
    assert all(r.duration_s < 2.0 for r in background)  # did not wait for the child
    # the harness is alive and well after all that
    [after] = sandbox.run([Program("python", "print('still here')")])
    assert after.status == "passed" and after.stdout.strip() == "still here"
