"""Hostile programs (``hostile_programs.py``): each must end failed/timeout/error, leave the host
untouched, and the run go on."""

from __future__ import annotations

import sys

import psutil
import pytest

from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits
from tests.conftest import REPO_ROOT
from tests.eval.hostile_programs import (
    ADD,
    ASSERT_SKIPPING_TRACER,
    containment_problems,
    hostile_programs,
    make_secrets,
    remove_secrets,
)


@pytest.fixture(scope="module")
def host_secrets():
    s = make_secrets(REPO_ROOT)
    yield s
    remove_secrets(s)


@pytest.mark.slow
def test_hostile_programs_are_contained(host_secrets):
    programs = hostile_programs(host_secrets)
    names = list(programs)
    after = Program(solution=ADD, tests="assert add(2, 3) == 5\n")
    limits = SandboxLimits(timeout_s=6.0, address_space_bytes=1 << 30)
    with Sandbox(workers=2, limits=limits) as sandbox:
        assert sandbox.isolation == "bwrap", "bubblewrap must work on the CI machine"
        results = sandbox.run_all([programs[n] for n in names] + [after, after])
        program_uids = set(sandbox._uids)
    # Nothing any program started survives the run: no process of the programs' uids is left anywhere
    # (while it runs, each worker holds the next program's process ready, confined, under that uid).
    doomed = [
        p
        for p in psutil.process_iter(["pid", "uids", "cmdline"])
        if p.info["uids"] and p.info["uids"].real in program_uids
    ]
    _, survivors = psutil.wait_procs(doomed, timeout=10)
    assert not survivors, [p.info for p in survivors]
    assert containment_problems(names, results[:-2], host_secrets, limits.output_bytes) == []
    # The run goes on: the same workers score a correct program right after all of that.
    assert [r.status for r in results[-2:]] == ["passed", "passed"], [(r.status, r.error) for r in results]


def test_same_attacks_fool_an_in_process_harness():
    """Control: without the sandbox's token and builtins reset, these three would count as passes."""
    import subprocess

    for name in ("early_exit_before_tests", "tamper_builtins", "tracer_skips_asserts"):
        solution = {
            "early_exit_before_tests": ADD.replace("a + b", "a - b") + "exit(0)\n",
            "tamper_builtins": "import builtins\nbuiltins.len = lambda x: 3\ndef add(a, b):\n    return []\n",
            "tracer_skips_asserts": ASSERT_SKIPPING_TRACER,
        }[name]
        tests = "assert len(add(2, 3)) == 3\n" if name == "tamper_builtins" else "assert add(2, 3) == 5\nx = 1\n"
        driver = (
            "import sys\nns = {}\nexec(compile(sys.argv[1], '<solution>', 'exec'), ns)\n"
            "exec(compile(sys.argv[2], '<tests>', 'exec'), ns)\n"
        )
        proc = subprocess.run([sys.executable, "-c", driver, solution, tests], capture_output=True, timeout=60)
        assert proc.returncode == 0, f"{name}: the naive harness was not fooled: {proc.stderr[-500:]}"
        with Sandbox(workers=1) as sandbox:
            assert sandbox.run(Program(solution, tests)).status in ("failed", "error"), name
