"""What a task does after the trainer stopped on a signal (exit 75), against a scripted `scontrol`.

The attempt records of earlier attempts are synthetic (written with the same append_attempt the task
uses); the decisions are the task's own code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phi_hpc.distenv import DistEnv
from phi_hpc.launch.runs import append_attempt, read_attempts
from phi_hpc.launch.task import JobFailed, PhiTask


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """An `scontrol` that reports a chosen job state and records the commands it was given."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$FAKE_MODE" in
  fail) echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1 ;;
  hang) sleep 30 ;;
  requeue-fails) if [ "$1" = requeue ]; then echo "Requeue not permitted" >&2; exit 1; fi ;;
  requeue-applied) if [ "$1" = requeue ]; then echo "Job is pending execution for job $2" >&2; exit 1; fi
                   if grep -q "^requeue" {calls}; then FAKE_RESTARTS=$((FAKE_RESTARTS + 1)); fi ;;
esac
if [ "$1" = show ]; then echo "JobId=$4 JobName=x JobState=$FAKE_STATE Reason=None Restarts=$FAKE_RESTARTS"; fi
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")

    monkeypatch.setenv("PHI_HPC_SCONTROL_TIMEOUT", "1")

    def configure(state: str, restarts: int, mode: str = "") -> Path:
        monkeypatch.setenv("FAKE_MODE", mode)
        monkeypatch.setenv("FAKE_STATE", state)
        monkeypatch.setenv("FAKE_RESTARTS", str(restarts))
        return calls

    return configure


def run_requeue(tmp_path, restarts: int, max_requeues: int = 3, rank: int = 0):
    task = PhiTask(str(tmp_path), "train", ["train", "x.yaml"], max_requeues=max_requeues)
    env = DistEnv(
        rank=rank,
        local_rank=rank,
        world_size=2,
        node_rank=0,
        master_addr="n1",
        master_port=20000,
        source="slurm",
        job_id="4242",
        restarts=restarts,
    )
    outcome = {"event": "end", "job": "train", "job_id": "4242", "restarts": restarts, "exit_code": 75}
    return task._requeue(env, restarts, outcome)


def events(tmp_path) -> list[dict]:
    return read_attempts(tmp_path)


def publish(run_dir: Path, step: int) -> None:
    """What the trainer leaves behind: RUN/checkpoints/latest naming the published step."""
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "latest").write_text(f"{step}\n")


def start(run_dir: Path, restarts: int) -> None:
    """Task 0's start record of an attempt (with the checkpoint step it started from)."""
    latest = run_dir / "checkpoints" / "latest"
    progress = int(latest.read_text()) if latest.exists() else None
    append_attempt(
        run_dir, {"event": "start", "job": "train", "job_id": "4242", "restarts": restarts, "progress": progress}
    )


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


def test_fifteen_requeues_that_make_progress_are_not_limited_by_max_requeues(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 0)
    for attempt in range(15):
        start(tmp_path, attempt)
        publish(tmp_path, 5 * (attempt + 1))  # each attempt trains and checkpoints further
        assert run_requeue(tmp_path, restarts=attempt, max_requeues=10)["status"] == "preempted"
    ends = [e for e in events(tmp_path) if e["event"] == "end"]
    assert [e["status"] for e in ends] == ["requeued"] * 15 and all(e["progressed"] for e in ends)
    assert len([c for c in calls.read_text().splitlines() if c.startswith("requeue")]) == 15


def test_no_progress_in_three_attempts_fails_the_job(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 0)
    publish(tmp_path, 5)
    for attempt in range(2):  # crash-loop: every attempt is stopped before it saves a newer checkpoint
        start(tmp_path, attempt)
        assert run_requeue(tmp_path, restarts=attempt, max_requeues=2)["status"] == "preempted"
    start(tmp_path, 2)
    with pytest.raises(JobFailed, match="no progress in 3 attempts"):
        run_requeue(tmp_path, restarts=2, max_requeues=2)
    assert len([c for c in calls.read_text().splitlines() if c.startswith("requeue")]) == 2
    assert events(tmp_path)[-1]["status"] == "failed" and "max_requeues=2" in events(tmp_path)[-1]["detail"]


def test_progress_after_stalled_attempts_is_forgiven_only_for_that_attempt(tmp_path, fake_scontrol):
    fake_scontrol("RUNNING", 0)
    publish(tmp_path, 5)
    start(tmp_path, 0)
    run_requeue(tmp_path, restarts=0, max_requeues=1)  # stalled 1 of 1: requeued
    start(tmp_path, 1)
    publish(tmp_path, 10)
    run_requeue(tmp_path, restarts=1, max_requeues=1)  # progressed: requeued, not counted
    start(tmp_path, 2)
    with pytest.raises(JobFailed, match="no progress in 2 attempts"):
        run_requeue(tmp_path, restarts=2, max_requeues=1)


@pytest.mark.parametrize("mode", ["fail", "hang", "missing", "requeue-fails"])
def test_an_unanswered_scontrol_fails_the_job_and_says_why(tmp_path, fake_scontrol, monkeypatch, mode):
    calls = fake_scontrol("RUNNING", 0, "" if mode == "missing" else mode)
    if mode == "missing":  # a container without Slurm's clients
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(JobFailed, match="not requeued"):
        run_requeue(tmp_path, restarts=0)
    last = events(tmp_path)[-1]
    assert last["status"] == "failed" and "resubmit" in last["detail"], last
    expected = {
        "fail": "Unable to contact",
        "hang": "no answer within 1 s",
        "missing": "not on PATH",
        "requeue-fails": "Requeue not permitted",
    }[mode]
    assert expected in last["detail"], last
    if mode in ("fail", "hang"):  # bounded retries, then the answer
        assert len(calls.read_text().splitlines()) == 3


def test_a_requeue_reported_failed_but_applied_by_the_controller_counts_as_requeued(tmp_path, fake_scontrol):
    """Under load a `scontrol requeue` can time out after the controller applied it; the retries then
    say "Job is pending execution". The controller's higher restart count shows it was requeued."""
    calls = fake_scontrol("RUNNING", 0, "requeue-applied")
    assert run_requeue(tmp_path, restarts=0)["status"] == "preempted"
    assert events(tmp_path)[-1]["status"] == "requeued"
    assert "requeue 4242" in calls.read_text().splitlines()


def test_other_ranks_fail_too_when_scontrol_does_not_answer(tmp_path, fake_scontrol):
    fake_scontrol("RUNNING", 0, "fail")
    with pytest.raises(JobFailed):
        run_requeue(tmp_path, restarts=0, rank=1)
    assert events(tmp_path) == []  # only task 0 records


def test_only_task_zero_requeues(tmp_path, fake_scontrol):
    calls = fake_scontrol("RUNNING", 0)
    run_requeue(tmp_path, restarts=0, rank=1)
    assert not [c for c in calls.read_text().splitlines() if c.startswith("requeue")]
    assert events(tmp_path) == []
