"""``phi-hpc doctor``: ok against the local cluster, a problem with its fix when accounting is down,
and no torch on the login node (the probe job imports it on the compute node instead)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi_hpc.launch.doctor import OK, PROBLEM, WARN, _gpus_of, probe_checks
from phi_hpc.launch.profiles import load_profile
from tests.launch.conftest import START_SCRIPT, phi
from tests.launch.test_light import HEAVY, imported_by

BASE = Path(os.environ.get("LOCAL_SLURM_BASE") or os.environ.get("SLURM_TEST_BASE") or "/tmp/local-slurm")


def doctor(tmp_path: Path, codegen_tokenizer: Path, *extra: str) -> tuple[int, dict]:
    done = phi(
        "doctor",
        "--profile",
        "local",
        "--run-dir",
        str(tmp_path / "runs"),
        "--tokenizer",
        str(codegen_tokenizer),
        "--probe-timeout",
        "240",
        "--json",
        *extra,
        check=False,
        timeout=400,
    )
    summary = json.loads(done.stdout)
    assert summary == json.loads((tmp_path / "runs" / "doctor" / "doctor.json").read_text())
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, {check["name"]: check for check in summary["checks"]}


@pytest.mark.slurm
def test_doctor_reports_ok_on_the_local_cluster(slurm_cluster, tmp_path, codegen_tokenizer):
    code, checks = doctor(tmp_path, codegen_tokenizer)
    problems = {name: check for name, check in checks.items() if check["status"] == PROBLEM}
    assert code == 0 and not problems, problems
    for name in (
        "slurm commands",
        "slurm controller",
        "accounting (sacct)",
        "partition",
        "gpus",
        "run folder shared",
        "torch",
        "bubblewrap",
        "free /tmp",
        "tokenizer",
        "humaneval data",
    ):
        assert checks[name]["status"] == OK, checks[name]
    # the probe really ran on a compute node of the cluster, with torch there
    assert checks["torch"]["detail"].startswith("torch ") and (
        " on node1" in checks["torch"]["detail"] or " on node2" in checks["torch"]["detail"]
    )
    assert checks["cuda"]["status"] in (OK, WARN)  # the local cluster's GPUs are fake: CPU training


@pytest.mark.slurm
def test_doctor_without_accounting_reports_the_problem_and_the_fix(slurm_cluster, tmp_path, codegen_tokenizer):
    pid = int((BASE / "run" / "slurmdbd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        code, checks = doctor(tmp_path, codegen_tokenizer)
    finally:
        restarted = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert code == 1
    accounting = checks["accounting (sacct)"]
    assert accounting["status"] == PROBLEM and "slurmdbd" in accounting["fix"], accounting
    assert checks["slurm controller"]["status"] == OK  # only accounting is blamed


def test_doctor_without_slurm_is_a_problem_and_imports_no_torch(tmp_path, codegen_tokenizer):
    """Away from Slurm (no sbatch on PATH): one problem row with the fix, exit 1, and no heavy import."""
    env = {"PATH": os.path.dirname(os.path.realpath(sys.executable))}
    done = phi("doctor", "--run-dir", str(tmp_path), "--tokenizer", str(codegen_tokenizer), check=False, env=env)
    assert done.returncode == 1 and "slurm commands" in done.stdout and "problem" in done.stdout
    assert "Traceback" not in done.stderr
    modules, output = imported_by(
        ["doctor", "--profile", "local", "--run-dir", str(tmp_path / "r"), "--probe-timeout", "1"]
    )
    assert not modules & HEAVY, f"doctor imported {sorted(modules & HEAVY)}"
    assert "slurm commands" in output


@pytest.mark.parametrize(
    "gres, gpus",
    [("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("(null)", 0), ("gpu:a100:4,shard:8", 4), ("shard:8,gpu:2", 2), ("", 0)],
)
def test_gpus_per_node_from_sinfo_gres(gres, gpus):
    assert _gpus_of(gres) == gpus


def test_probe_answers_become_rows():
    profile = load_profile("a100x8")
    answers = {
        "host": "gpu7",
        "torch": "2.3.0",
        "cuda": True,
        "cuda_devices": 8,
        "nccl": "2.20.5",
        "bwrap": False,
        "tmp_free_bytes": 512 << 20,
    }
    rows = {check.name: check for check in probe_checks(answers, profile)}
    assert rows["torch"].status == OK and rows["nccl"].detail == "NCCL 2.20.5"
    assert rows["bubblewrap"].status == PROBLEM and "bubblewrap" in rows["bubblewrap"].fix
    assert rows["free /tmp"].status == PROBLEM and "TMPDIR" in rows["free /tmp"].fix
    cpu_only = {
        check.name: check
        for check in probe_checks(
            {"torch": None, "torch_error": "ImportError: x", "cuda": False, "bwrap": True, "tmp_free_bytes": 50 << 30},
            profile,
        )
    }
    assert cpu_only["torch"].status == PROBLEM and cpu_only["cuda"].status == WARN
    assert cpu_only["free /tmp"].status == OK
