"""What a task does after the trainer stopped on a signal (exit 75), against a scripted `scontrol`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from phi_hpc.launch.task import JobFailed, PhiTask
from phi_hpc.distenv import DistEnv


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """An `scontrol` that reports a chosen job state and records the commands it was given."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
if [ "$1" = show ]; then echo "JobId=$4 JobName=x JobState=$FAKE_STATE Reason=None Restarts=$FAKE_RESTARTS"; fi
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")

    def configure(state: str, restarts: int) -> Path:
        monkeypatch.setenv("FAKE_STATE", state)
        monkeypatch.setenv("FAKE_RESTARTS", str(restarts))
        return calls

    return configure


def run_requeue(tmp_path, restarts: int, max_requeues: int = 3, rank: int = 0):
    task = PhiTask(str(tmp_path), "train", ["train", "x.yaml"], max_requeues=max_requeues)
    env = DistEnv(rank=rank, local_rank=rank, world_size=2, node_rank=0, master_addr="n1", master_port=20000,
                  source="slurm", job_id="4242", restarts=restarts)
    outcome = {"event": "end", "job": "train", "job_id": "4242", "restarts": restarts, "exit_code": 75}
    return task._requeue(env, restarts, outcome)


def events(tmp_path) -> list[dict]:
    path = tmp_path / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_time_limit_signal_requeues_the_running_job(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 0)
    assert run_requeue(tmp_path, restarts=0)["status"] == "preempted"
    assert "requeue 4242" in calls.read_text().splitlines()
    assert events(tmp_path)[-1]["status"] == "requeued"


def test_scancel_is_not_undone(tmp_path, fake_scontrol):
    calls = fake_scontrol("COMPLETING", 0)  # scancel: ending, Slurm counted no requeue
    run_requeue(tmp_path, restarts=0)
    assert not [c for c in calls.read_text().splitlines() if c.startswith("requeue")]
    assert events(tmp_path)[-1]["status"] == "stopped"


def test_operator_requeue_is_recorded_not_repeated(tmp_path, fake_scontrol):
    calls = fake_scontrol("COMPLETING", 1)  # `scontrol requeue` already raised Restarts
    run_requeue(tmp_path, restarts=0)
    assert not [c for c in calls.read_text().splitlines() if c.startswith("requeue")]
    assert events(tmp_path)[-1]["status"] == "requeued"


def test_requeue_limit_fails_the_job(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 3)
    with pytest.raises(JobFailed, match="max_requeues=3"):
        run_requeue(tmp_path, restarts=3, max_requeues=3)
    assert not [c for c in calls.read_text().splitlines() if c.startswith("requeue")]
    assert events(tmp_path)[-1]["detail"] == "requeue limit reached (3)"


def test_only_task_zero_requeues(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 0)
    run_requeue(tmp_path, restarts=0, rank=1)
    assert not [c for c in calls.read_text().splitlines() if c.startswith("requeue")]
    assert events(tmp_path) == []
