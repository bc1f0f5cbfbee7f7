"""Issue 17's acceptance: no false pass, nothing of the zygote or the user's keyrings reachable, nothing
left for the next program (``false_passes.py`` holds the attempts; install_case.py runs them as an
ordinary user too)."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import time

import pytest

from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits
from phi_hpc.eval.tasks import load_task
from phi_hpc.eval.worker import ZYGOTE_PARTS
from tests.eval.false_passes import (
    clean_world_check,
    plant_key,
    reach_attempts,
    read_key,
    unlink_key,
    wrong_answer_attempts,
)

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the attempts use x86_64 syscall numbers")
LIMITS = SandboxLimits(timeout_s=10.0, address_space_bytes=2 << 30)


@pytest.fixture(scope="module")
def problems(humaneval_path, mbpp_path):
    return {
        p.task_id: p
        for task, path in (("humaneval", humaneval_path), ("mbpp-full", mbpp_path))
        for p in load_task(task, path)
    }


@pytest.fixture(scope="module")
def planted_key():
    key, payload = plant_key()
    yield key, payload
    unlink_key(key)


def _attempts(problems, key):
    attempts = {**wrong_answer_attempts(problems), **reach_attempts(key)}
    assert len(attempts) >= 25
    return attempts


@pytest.mark.slow
def test_no_false_pass_and_the_planted_key_stays_untouched(problems, planted_key):
    key, payload = planted_key
    attempts = _attempts(problems, key)
    with Sandbox(workers=2, limits=LIMITS) as sandbox:
        results = sandbox.run_all(list(attempts.values()))
    verdicts = {name: (r.status, r.error) for name, r in zip(attempts, results)}
    assert [name for name, (status, _) in verdicts.items() if status == "passed"] == [], verdicts
    # The references of the attacked problems still pass in the same sandbox.
    with Sandbox(workers=2, limits=LIMITS) as sandbox:
        refs = sandbox.run_all(
            [
                problems[t].program(problems[t].reference)
                for t in ("HumanEval/0", "HumanEval/2", "HumanEval/32", "Mbpp/11", "Mbpp/126")
            ]
        )
    assert [r.status for r in refs] == ["passed"] * 5, [(r.status, r.error) for r in refs]
    assert read_key(key) == payload, "a program read, revoked or changed the planted key"


@pytest.mark.slow
def test_each_attempt_is_followed_by_a_right_answer_on_one_worker(problems, planted_key):
    """--workers 1: after every attempt (deep trees, IPC, memfd, keyrings, forged replies ...) the same
    worker scores a right answer, which also finds nothing of the attempt left behind."""
    key, payload = planted_key
    attempts = _attempts(problems, key)
    right = problems["HumanEval/0"].program(problems["HumanEval/0"].reference)
    programs = []
    for program in attempts.values():
        programs += [program, clean_world_check(), right]
    with Sandbox(workers=1, limits=LIMITS) as sandbox:
        results = sandbox.run_all(programs)
    names = list(attempts)
    for index, name in enumerate(names):
        attempt, check, answer = results[3 * index : 3 * index + 3]
        assert attempt.status != "passed", (name, attempt.error)
        assert (check.status, answer.status) == ("passed", "passed"), (name, check.error, answer.error)
    assert read_key(key) == payload


def test_kill_minus_one_spares_a_host_process_of_the_same_uid():
    """--isolation rlimits (no pid namespace for the zygote): a program's kill(-1) stays in its own pid
    namespace; a host process running under the programs' host uid survives."""
    with Sandbox(workers=1, isolation="rlimits", limits=SandboxLimits(timeout_s=5)) as sandbox:
        uid = sandbox._uids[0]
        kwargs = {"user": uid, "group": uid} if uid is not None else {}
        bystander = subprocess.Popen(["sleep", "60"], **kwargs)
        try:
            program = (
                "import os, signal, time\nif os.fork() == 0:\n    time.sleep(30)\n"
                "os.kill(-1, signal.SIGKILL)\nok = 1\n"
            )  # a child of its own to kill: no ESRCH
            result = sandbox.run(Program(program, "assert ok\n"))
            time.sleep(0.2)
            assert bystander.poll() is None, "kill(-1) reached a host process"
        finally:
            bystander.kill()
            bystander.wait()
    assert result.status == "passed", result.error


def test_work_root_mode_does_not_follow_the_umask():
    old = os.umask(0)
    try:
        with Sandbox(workers=1, isolation="unshare") as sandbox:
            assert sandbox.run(Program("x = 1\n", "assert x == 1\n")).status == "passed"
            zygote = next(iter(sandbox._live.values()))
            assert os.stat(zygote._host_tmp.name).st_mode & 0o777 == 0o711
            assert os.stat(os.path.join(zygote._host_tmp.name, "work")).st_mode & 0o777 == 0o711
    finally:
        os.umask(old)


def test_real_time_signals_have_names_in_verdicts():
    """signal.Signals(40) raises ValueError; the verdict must still name the signal."""
    tree = ast.parse("\n".join(part.read_text() for part in ZYGOTE_PARTS))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_signal_name")
    namespace = {"signal": __import__("signal")}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "zygote", "exec"), namespace)
    assert namespace["_signal_name"](40) == "SIGRTMIN+6" and namespace["_signal_name"](11) == "SIGSEGV"


def test_a_forged_reply_is_rejected_and_the_program_still_scored():
    """Root can write into the zygote's reply pipe (a program cannot, see the attempts): a framed
    "passed" reply that did not carry the request's nonce must not be taken, and the worker goes on."""
    import json
    import struct

    import psutil

    wrong = Program("def f():\n    return 2\n", "assert f() == 1\n")
    with Sandbox(workers=1) as sandbox:
        assert sandbox.run(wrong).status == "failed"
        zygote = next(iter(sandbox._live.values()))
        server = None
        for process in psutil.Process(zygote._proc.pid).children(recursive=True):
            try:  # the zygote is the one in the zygote's image that runs as root; its forks are zombies or not
                if "work_root" in " ".join(process.cmdline()) and process.uids().real == 0:
                    server = server or process
            except psutil.Error:
                continue
        body = json.dumps({"status": "passed", "error": None, "duration": 0.0, "output": ""}).encode()
        with open(f"/proc/{server.pid}/fd/1", "wb") as pipe:
            pipe.write(struct.pack(">I", len(body)) + body)
        assert sandbox.run(wrong).status == "failed"
        assert sandbox.run(Program("def f():\n    return 1\n", "assert f() == 1\n")).status == "passed"


def test_program_view_of_etc_is_minimal():
    probe = Program("import os\netc = sorted(os.listdir('/etc'))\n", "assert False, etc\n")
    with Sandbox(workers=1) as sandbox:
        listing = sandbox.run(probe).error
    for private in ("shadow", "gshadow", "hostname", "ssh", "sudoers", "machine-id"):
        assert f"'{private}'" not in listing, listing


def test_memory_cgroup_where_one_can_be_had():
    """Root here: each worker's zygote and programs run in a memory cgroup of their own (counting kernel
    and shared memory), removed afterwards; where none can be had, the run says so."""
    from phi_hpc.eval.cgroup import unavailable_reason

    limits = SandboxLimits(timeout_s=5)
    with Sandbox(workers=1, limits=limits) as sandbox:
        assert sandbox.run(Program("x = 1\n", "assert x == 1\n")).passed
        zygote = next(iter(sandbox._live.values()))
        if unavailable_reason() is not None:
            assert zygote.cgroup is None and sandbox.notes == [unavailable_reason()]
            return
        assert sandbox.notes == [] and zygote.cgroup is not None
        path = zygote.cgroup.path
        assert str(zygote._proc.pid) in (path / "cgroup.procs").read_text().split()
        limit_file = "memory.max" if zygote.cgroup.version == "v2" else "memory.limit_in_bytes"
        expected = limits.address_space_bytes + limits.tmp_bytes + limits.shm_bytes + (256 << 20)
        assert abs(int((path / limit_file).read_text()) - expected) < (1 << 20)
    assert not path.exists()
