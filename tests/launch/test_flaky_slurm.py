"""Slurm as real clusters behave, on real local clusters.

1. On the shared test cluster: training jobs whose ``scontrol`` (a shim first on PATH inside the job)
   fails, hangs past its timeout, or is missing, are signalled mid-run (SIGUSR2, as before a time
   limit). None may end COMPLETED, and the eval chained to each with ``--after RUN`` must never run.
2. On a second cluster this test starts beside it (own ports, node names q1/q2 on 127.0.0.12/.13, its
   own base folder), with accounting off, ``MinJobAge=10`` and memory limits: ``status``, ``logs
   --follow``, ``cancel`` and ``--after RUN`` after Slurm purged the jobs, and an array whose element 1
   is killed for exceeding its memory.

The cheap jobs of part 2 run ``phi-hpc --version`` (or a failing ``phi-hpc status`` of a missing folder)
through the same Submitter/PhiTask as every job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.launch.conftest import (
    REPO_ROOT,
    attempts,
    cli_env,
    debug_logs,
    eval_args,
    phi,
    step_losses,
    tiny_pretrain_args,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

START, STOP = REPO_ROOT / "slurm" / "local-cluster" / "start.sh", REPO_ROOT / "slurm" / "local-cluster" / "stop.sh"


# ---------------------------------------------------------------------------- 1: scontrol shims
def shim_profile(tmp: Path, mode: str) -> Path:
    """The local profile, with a PATH inside the job where scontrol fails, hangs or does not exist."""
    shim = tmp / f"shim-{mode}"
    shim.mkdir()
    if mode == "missing":  # every command of PATH but scontrol (a container without Slurm's clients)
        for folder in os.environ["PATH"].split(os.pathsep):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                target = shim / name
                if name != "scontrol" and not target.exists():
                    target.symlink_to(Path(folder) / name)
        path_line = f"export PATH={shim}"
    else:
        body = {
            "fail": 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1',
            "hang": "exec sleep 60",
        }[mode]
        (shim / "scontrol").write_text(f"#!/bin/bash\n{body}\n")
        (shim / "scontrol").chmod(0o755)
        path_line = f"export PATH={shim}:$PATH"
    profile = tmp / f"profile-{mode}.yaml"
    profile.write_text(
        (REPO_ROOT / "configs" / "cluster" / "local.yaml")
        .read_text()
        .replace("setup: []", f"setup:\n  - '{path_line}'")
        .replace('OMP_NUM_THREADS: "1"', 'OMP_NUM_THREADS: "1"\n  PHI_HPC_SCONTROL_TIMEOUT: "3"')
    )
    return profile


def current_step(run_dir: Path) -> int:
    return max(step_losses(run_dir), default=0) if (run_dir / "metrics.jsonl").exists() else 0


def train_id(run_dir: Path) -> str:
    return next(j["job_id"] for j in json.loads((run_dir / "run.json").read_text())["jobs"] if j["name"] == "train")


def test_a_signalled_job_whose_scontrol_does_not_answer_fails_and_its_eval_never_runs(
    slurm_cluster, tiny_data, codegen_tokenizer, tmp_path
):
    runs = {}
    for mode in ("fail", "hang", "missing"):
        run = tmp_path / mode
        phi(*tiny_pretrain_args(run, tiny_data, "--profile", str(shim_profile(tmp_path, mode)), "--set", "steps=60"))
        phi(*eval_args(run, codegen_tokenizer))
        runs[mode] = run
    signalled: set[str] = set()
    deadline = time.monotonic() + 600
    while len(signalled) < len(runs) and time.monotonic() < deadline:
        for mode, run in runs.items():
            if mode not in signalled and current_step(run) >= 2:
                subprocess.run(["scancel", "--signal=USR2", train_id(run)], check=True, capture_output=True)
                signalled.add(mode)
        time.sleep(1)
    assert signalled == set(runs), f"only {signalled} reached step 2"
    for mode, run in runs.items():
        rows = wait_for(run, ["train", "eval-latest"], timeout=300)
        train = rows["train"]
        assert train["state"] == "FAILED", (mode, train, debug_logs(run))
        assert "not requeued" in train["reason"], (mode, train)
        expected = {"fail": "Unable to contact", "hang": "no answer within 3 s", "missing": "not on PATH"}[mode]
        assert expected in train["reason"], (mode, train["reason"])
        assert train["step"] < 60
        assert rows["eval-latest"]["state"] == "CANCELLED", rows["eval-latest"]
        assert not [e for e in attempts(run) if e["job"] == "eval-latest"], "the eval job must never have started"


# ---------------------------------------------------------------------------- 2: a second cluster
SECOND = {
    "LOCAL_SLURM_PREFIX": "q",
    "LOCAL_SLURM_ADDR_OFFSET": "11",
    "LOCAL_SLURM_CTLD_PORT": "6917",
    "LOCAL_SLURM_NODE_PORT_BASE": "17100",
    "LOCAL_SLURM_ACCOUNTING": "0",
    "LOCAL_SLURM_MIN_JOB_AGE": "10",
    "LOCAL_SLURM_MEMORY_LIMITS": "1",
    "LOCAL_SLURM_CLUSTER_NAME": "noacct",
}


@pytest.fixture(scope="module")
def no_accounting_cluster(tmp_path_factory):
    """A second cluster beside the shared one: no accounting, jobs purged 10 s after they end."""
    if shutil.which("slurmctld") is None:
        pytest.fail("slurmctld is not installed (slurm/local-cluster/start.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="phi-noacct-slurm-"))
    base.chmod(0o755)  # munged wants its socket folder reachable by all (pytest's tmp folders are 0700)
    env = {**os.environ, **SECOND, "LOCAL_SLURM_BASE": str(base)}
    try:
        done = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        yield {"SLURM_CONF": str(base / "etc" / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(STOP), "--purge"], env=env, capture_output=True, timeout=300)


SUBMIT = """
import json, sys
from pathlib import Path
from phi_hpc.launch.profiles import load_profile
from phi_hpc.launch.submit import Submitter

run, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
profile = load_profile("local", {"tasks_per_node": 1, "gpus_per_node": 0, "mem_per_cpu": "300M",
                                 "setup": spec.get("setup", [])})
submitter = Submitter(run_dir=run, kind="test", profile=profile, executor="slurm", command=["test"])
submitter.open()
for name, argv in spec.get("jobs", []):
    submitter.submit(name, argv)
for name, argvs in spec.get("arrays", []):
    submitter.submit_array(name, argvs)
"""


def submit(run: Path, env: dict, **spec) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", SUBMIT, str(run), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {j["name"]: j["job_id"] for j in json.loads((run / "run.json").read_text())["jobs"]}


def slurm_knows(job_id: str, env: dict) -> bool:
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i"],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=60,
    )
    return done.returncode == 0 and job_id in done.stdout


def wait_purged(ids: list[str], env: dict, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while any(slurm_knows(i, env) for i in ids):
        assert time.monotonic() < deadline, f"jobs {ids} were not purged within {timeout} s"
        time.sleep(2)


def json_status(run: Path, env: dict) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(phi("status", str(run), "--json", env=env).stdout)["jobs"]}


def test_status_logs_cancel_and_after_work_once_jobs_are_purged(no_accounting_cluster, tmp_path, codegen_tokenizer):
    env = no_accounting_cluster
    run = tmp_path / "run"
    ids = submit(run, env, jobs=[["train", ["--version"]], ["broken", ["status", str(tmp_path / "missing")]]])
    deadline = time.monotonic() + 240
    while {e["job"] for e in attempts(run) if e["event"] == "end"} != {"train", "broken"}:
        assert time.monotonic() < deadline, debug_logs(run)
        time.sleep(2)
    wait_purged(list(ids.values()), env)
    assert (
        subprocess.run(
            ["sacct", "-n", "-j", ids["train"]], capture_output=True, text=True, env=cli_env(env), timeout=60
        ).stdout.strip()
        == ""
    )  # no accounting: only the run's records know
    rows = json_status(run, env)
    assert rows["train"]["state"] == "COMPLETED" and rows["broken"]["state"] == "FAILED", rows
    # logs --follow of a purged job prints its log and stops.
    follow = subprocess.run(
        [sys.executable, "-m", "phi_hpc", "logs", str(run), "--follow"],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=60,
    )
    assert follow.returncode == 0 and "phi-hpc, version" in follow.stdout, follow.stderr
    cancelled = phi("cancel", str(run), env=env).stdout
    assert f"train ({ids['train']}): already COMPLETED" in cancelled
    assert f"broken ({ids['broken']}): already FAILED" in cancelled
    # --after RUN: the training job is known (by the records) to have completed, so no dependency is needed.
    done = phi(*eval_args(run, codegen_tokenizer), env=env)
    assert "already completed, no dependency needed" in done.stdout
    eval_id = json.loads((run / "run.json").read_text())["jobs"][-1]["job_id"]
    scripts = list((run / "submitit").glob(f"{eval_id}_submission.sh"))
    assert scripts and "dependency" not in scripts[0].read_text()
    deadline = time.monotonic() + 240
    while not [e for e in attempts(run) if e["job"] == "eval-latest" and e["event"] == "start"]:
        assert time.monotonic() < deadline, "the eval job never started"
        time.sleep(2)


def test_an_array_element_killed_for_memory_fails_the_array_and_is_named(no_accounting_cluster, tmp_path):
    env = no_accounting_cluster
    run = tmp_path / "run"
    # Element 1's batch script grabs 1 GiB against its 300M request: Slurm kills it (OverMemoryKill).
    hog = (
        f'if [ "$SLURM_ARRAY_TASK_ID" = 1 ]; then {sys.executable} -c '
        "'import time; x = bytearray(1 << 30); x[::4096] = bytes(len(x[::4096])); time.sleep(20)'; fi"
    )
    ids = submit(run, env, arrays=[["work", [["--version"]] * 3]], setup=[hog])
    deadline = time.monotonic() + 300
    rows = {}
    while time.monotonic() < deadline:
        rows = json_status(run, env)
        if rows["work"]["state"] not in ("PENDING", "RUNNING", "COMPLETING"):
            break
        time.sleep(2)
    work = rows["work"]
    assert work["state"] == "FAILED", (work, debug_logs(run))
    assert re.match(r"element 1 (FAILED|OUT_OF_MEMORY|LOST)", work["reason"]), work
    assert "#SBATCH --array=0-2%3" in (run / "submitit" / f"{ids['work']}_submission.sh").read_text()
    log = next((run / "submitit").glob(f"{ids['work']}_1_*log.err"), None)
    assert log is not None and "exceeded memory limit" in log.read_text()
    # And once Slurm has forgotten the array, the records still say so.
    wait_purged([ids["work"]], env)
    work = json_status(run, env)["work"]
    assert work["state"] == "FAILED" and work["reason"].startswith("element 1 LOST"), work
