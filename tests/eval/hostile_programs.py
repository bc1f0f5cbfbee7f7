"""Hostile programs and the checks that they were contained; plain Python (no pytest, no psutil), so
that ``install_case.py`` can run them under any interpreter, as any user.

Every hostile solution also defines a correct ``add``; the tests would pass if the attack were
harmless, so a non-pass is caused by the attack being stopped, not by a wrong answer. Where the attack
is "learn something", the tests assert that it succeeded: such a program can only pass by breaking out.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import textwrap
from pathlib import Path

from phi_hpc.eval.sandbox import Program

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
# A wrong solution plus a tracer that jumps over every line of the tests but their last.
ASSERT_SKIPPING_TRACER = textwrap.dedent("""
    import sys
    def add(a, b):
        return 0
    def tracer(frame, event, arg):
        if frame.f_code.co_filename == "<tests>" and event == "line":
            last = max(line for _, _, line in frame.f_code.co_lines() if line)
            if frame.f_lineno < last:
                frame.f_lineno = last
        return tracer
    sys.settrace(tracer)
    """)
TRACED_TESTS = "assert add(2, 3) == 5\nassert add(1, 1) == 2\nx = 1\n"
NOT_PASSED = {"failed", "timeout", "error"}


def make_secrets(project_dir: Path) -> dict:
    """Canaries in the home folder and the project, a secret in our environment, a listening socket."""
    home_secret = Path.home() / f".phi-hpc-eval-canary-{secrets.token_hex(4)}"
    home_secret.write_text("home-" + secrets.token_hex(8))
    fd, project_path = tempfile.mkstemp(prefix=".eval-canary-", dir=project_dir)
    os.write(fd, ("project-" + secrets.token_hex(8)).encode())
    os.close(fd)
    project_secret = Path(project_path)
    env_secret = "env-" + secrets.token_hex(8)
    os.environ["PHI_HPC_TEST_SECRET"] = env_secret
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    return {
        "home": home_secret,
        "project": project_secret,
        "project_dir": Path(project_dir),
        "env": env_secret,
        "listener": listener,
        "home_text": home_secret.read_text(),
        "project_text": project_secret.read_text(),
        "mark": "pwned-by-eval-" + secrets.token_hex(4),
    }


def remove_secrets(s: dict) -> None:
    s["listener"].close()
    s["home"].unlink(missing_ok=True)
    s["project"].unlink(missing_ok=True)
    os.environ.pop("PHI_HPC_TEST_SECRET", None)
    for leftover in _planted_paths(s):
        leftover.unlink(missing_ok=True)


def _planted_paths(s: dict) -> list[Path]:
    """Where hostile programs try to write: none of these may exist on the host afterwards."""
    return [
        Path.home() / "pwned-by-eval",
        s["project_dir"] / "pwned-by-eval",
        Path("/dev/shm") / s["mark"],
        Path("/tmp") / s["mark"],
    ]


def hostile_programs(s) -> dict[str, Program]:
    home, project, mark = str(s["home"]), str(s["project"]), s["mark"]
    port = s["listener"].getsockname()[1]
    host_pid = os.getpid()
    programs = {
        "fork_bomb": (
            ADD + "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            ADD_TESTS,
        ),
        "memory_bomb": (ADD + "hog = []\nwhile True:\n    hog.append(bytearray(64 << 20))\n", ADD_TESTS),
        "forked_memory_bomb": (
            ADD
            + textwrap.dedent("""
            import os, time
            for _ in range(8):
                if os.fork() == 0:
                    hog = bytearray(300 << 20)  # each within its own RLIMIT_AS, together far above
                    time.sleep(60)
            time.sleep(60)
            """),
            ADD_TESTS,
        ),
        "daemon_left_behind": (
            ADD
            + textwrap.dedent("""
            import os, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(1000)  # a daemon that outlives the program, if nothing kills it
                os._exit(0)
            os._exit(0)
            """),
            ADD_TESTS,
        ),
        "fill_the_disk": (
            ADD
            + textwrap.dedent("""
            block = b"x" * (1 << 20)
            for index in range(10000):  # each file under RLIMIT_FSIZE, together far beyond /tmp's size
                with open(f"/tmp/fill{index}", "wb") as handle:
                    for _ in range(32):
                        handle.write(block)
            """),
            ADD_TESTS,
        ),
        "huge_allocation": (ADD + "x = bytearray(64 << 30)\n", ADD_TESTS),
        "infinite_loop": (ADD + "while True:\n    pass\n", ADD_TESTS),
        "cpu_threads": (
            ADD
            + textwrap.dedent("""
            import threading
            def spin():
                while True:
                    pass
            for _ in range(16):
                threading.Thread(target=spin).start()
            spin()
            """),
            ADD_TESTS,
        ),
        "connect_to_host_listener": (
            ADD
            + textwrap.dedent(f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            s.sendall(b"stolen")
            """),
            ADD_TESTS,
        ),
        "write_home": (ADD + f"open({str(Path.home() / 'pwned-by-eval')!r}, 'w').write('x')\n", ADD_TESTS),
        "delete_home": (ADD + f"import os\nos.remove({home!r})\n", ADD_TESTS),
        "read_home": (ADD + f"leak = open({home!r}).read()\nprint(leak)\n", ADD_TESTS + "assert leak\n"),
        "write_project": (ADD + f"open({str(s['project_dir'] / 'pwned-by-eval')!r}, 'w').write('x')\n", ADD_TESTS),
        "write_host_shm_and_tmp": (
            ADD + f"open('/dev/shm/{mark}', 'w').write('x')\nopen('/tmp/{mark}', 'w').write('x')\n",
            ADD_TESTS + f"import os\nassert os.path.exists('/dev/shm/{mark}')\n"
            "assert False, 'a private /dev/shm is expected'\n",
        ),
        "delete_project": (ADD + f"import os\nos.remove({project!r})\n", ADD_TESTS),
        "read_project": (ADD + f"leak = open({project!r}).read()\nprint(leak)\n", ADD_TESTS + "assert leak\n"),
        "kill_parent_and_host": (
            ADD
            + textwrap.dedent(f"""
            import os, signal
            for pid in (os.getppid(), 1, {host_pid}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            raise SystemExit(0)
            """),
            ADD_TESTS,
        ),
        "kill_everything": (
            ADD
            + textwrap.dedent("""
            import os, signal
            parent = os.getppid()
            os.kill(-1, signal.SIGKILL)
            def parent_dead():
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    return True
                except PermissionError:
                    return False
                return False
            """),
            ADD_TESTS + "assert parent_dead()\n",
        ),
        "early_exit": (ADD + "exit(0)\n", ADD_TESTS + "assert False, 'never reached'\n"),
        "os_exit_in_tests": ("import os\ndef add(a, b):\n    os._exit(0)\n", ADD_TESTS),
        "system_exit_in_tests": ("def add(a, b):\n    raise SystemExit(0)\n", ADD_TESTS),
        "fake_success": (
            "import os\ndef add(a, b):\n    print('passed')\n    print('ALL TESTS PASSED')\n"
            "    os.write(1, b'passed\\n')\n    os._exit(0)\n",
            ADD_TESTS,
        ),
        "tamper_builtins": (
            "import builtins\nbuiltins.len = lambda x: 3\nbuiltins.abs = lambda x: 0\n"
            "def add(a, b):\n    return [a, b, 0, 0]\n",
            "assert len(add(2, 3)) == 3\nassert abs(add(1, 1)[0] - 7) < 1e-9\n",
        ),
        "redefine_test_helper": (
            "def add(a, b):\n    return 0\ndef check(candidate):\n    return None\n",
            "def check(candidate):\n    assert candidate(2, 3) == 5\ncheck(add)\n",
        ),
        "tracer_skips_asserts": (ASSERT_SKIPPING_TRACER, TRACED_TESTS),
        "tracer_guards_itself": (
            ASSERT_SKIPPING_TRACER + "import threading\n"
            "sys.settrace = sys.setprofile = threading.settrace = lambda hook: None\n",
            TRACED_TESTS,
        ),  # "you cannot remove me"
        "ignore_sigterm": (
            ADD + "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n",
            ADD_TESTS,
        ),
        "output_flood_1gb": (
            "import os, sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n"
            "    sys.stdout.write(chunk)\nsys.stdout.flush()\nos._exit(0)\n" + ADD,
            ADD_TESTS,
        ),
        "ctypes_segfault": (ADD + "import ctypes\nctypes.string_at(0)\n", ADD_TESTS),
        "unbounded_recursion": (ADD + "def down(n):\n    return down(n + 1)\ndown(0)\n", ADD_TESTS),
        "deep_recursion_segfault": (
            ADD + "import sys\nsys.setrecursionlimit(10**8)\ndef down(n):\n    return down(n + 1)\ndown(0)\n",
            ADD_TESTS,
        ),
        "environment_secrets": (
            ADD
            + textwrap.dedent("""
            import os, glob
            found = dict(os.environ)
            for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
                try:
                    found[path] = open(path, "rb").read().decode("latin-1")
                except OSError:
                    pass
            print(found)
            leaked = any("PHI_HPC_TEST_SECRET" in str(v) for v in found.values()) or "PHI_HPC_TEST_SECRET" in found
            """),
            ADD_TESTS + "assert leaked\n",
        ),
        "token_hunter": (
            ADD
            + textwrap.dedent("""
            import os, sys
            # Read every fd, the environment, our own code and globals; replay all of it to every fd.
            loot = [repr(os.environ).encode(), repr(sys.argv).encode(), repr(globals()).encode()]
            for fd in range(3, 256):
                try:
                    loot.append(os.read(fd, 4096))
                except OSError:
                    pass
            for fd in range(1, 256):
                for item in loot:
                    try:
                        os.write(fd, item)
                    except OSError:
                        pass
            os._exit(0)
            """),
            ADD_TESTS,
        ),
        "escape_via_exec": (ADD + "import os\nos.execv('/bin/true', ['true'])\n", ADD_TESTS),
    }
    return {name: Program(solution=sol, tests=tests) for name, (sol, tests) in programs.items()}


EXPECTED = {
    "fork_bomb": {"timeout"},
    "infinite_loop": {"timeout"},
    "cpu_threads": {"timeout"},
    "ignore_sigterm": {"timeout"},
    "memory_bomb": {"error", "timeout"},
    "huge_allocation": {"error"},
    "forked_memory_bomb": {"error"},
    "early_exit": {"failed"},
    "os_exit_in_tests": {"failed"},
    "system_exit_in_tests": {"failed"},
    "fake_success": {"failed"},
    "tamper_builtins": {"failed"},
    "redefine_test_helper": {"failed"},
    "tracer_skips_asserts": {"failed", "error"},
    "tracer_guards_itself": {"failed", "error"},
    "ctypes_segfault": {"error"},
    "unbounded_recursion": {"error"},
    "kill_everything": {"failed", "error"},
    "token_hunter": {"failed"},
    "escape_via_exec": {"failed"},
    "daemon_left_behind": {"failed"},
    "fill_the_disk": {"error"},
}
ERRORS = {
    "memory_bomb": "MemoryError",
    "fill_the_disk": "No space left on device",
    "forked_memory_bomb": "processes together used more than 1024 MiB",
    "ctypes_segfault": "ctypes.string_at is disabled in the sandbox",
    "unbounded_recursion": "RecursionError",
}


def containment_problems(names: list[str], results: list, s: dict, output_limit: int) -> list[str]:
    """Everything that shows an attack worked: a pass, an unexpected verdict, uncapped output, a
    changed host (canaries, planted files, the listener, secrets in the output). Empty: all contained."""
    problems = []
    verdicts = {name: (r.status, r.error) for name, r in zip(names, results)}
    for name, result in zip(names, results):
        if result.status not in NOT_PASSED:
            problems.append(f"{name} was scored {result.status}")
        if len(result.output) > output_limit + 200:
            problems.append(f"{name}: output not capped")
        for secret in (s["env"], s["home_text"], s["project_text"]):
            if secret in result.output:
                problems.append(f"{name}: a secret reached its output")
    for name, statuses in EXPECTED.items():
        if name in verdicts and verdicts[name][0] not in statuses:
            problems.append(f"{name}: {verdicts[name]}")
    for name, text in ERRORS.items():  # the reason, when the verdict is the error (not a timeout under load)
        if name in verdicts and verdicts[name][0] == "error" and text not in (verdicts[name][1] or ""):
            problems.append(f"{name}: expected {text!r} in {verdicts[name][1]!r}")
    if s["home"].read_text() != s["home_text"] or s["project"].read_text() != s["project_text"]:
        problems.append("a canary was changed")
    problems += [f"{path} was written on the host" for path in _planted_paths(s) if path.exists()]
    try:
        s["listener"].accept()
        problems.append("a program connected to the host's listener")
    except BlockingIOError:
        pass
    return problems
