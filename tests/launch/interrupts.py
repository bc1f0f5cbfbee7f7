"""The interruptions the Slurm tests put training runs through, driven one poll at a time.

``test_slurm.py`` and ``test_multinode.py`` both interrupt two runs of the tiny pretrain while they
train, and then check that each resumed exactly like an uninterrupted run:

* ``requeued``: an operator runs ``scontrol requeue`` at step 7;
* ``limited``: a 2-minute time limit with SIGUSR2 60 s before it. Slurm sends that signal from a
  30-second housekeeping loop, i.e. 30 to 60 s after the start, and this tiny run could finish before
  that; so once it is training its tasks are frozen (SIGSTOP) until the signal is surely out (61 s),
  then let go (SIGCONT): they see SIGUSR2 mid-run, exactly as a long training run at its time limit
  does. Once the limit has ended an attempt it is lifted, so that the requeued attempt can finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.launch.conftest import attempts, step_losses


def job_id(run_dir: Path, name: str) -> str:
    record = json.loads((run_dir / "run.json").read_text())
    return next(job["job_id"] for job in record["jobs"] if job["name"] == name)


def current_step(run_dir: Path) -> int:
    return max(step_losses(run_dir), default=0) if (run_dir / "metrics.jsonl").exists() else 0


def task_pids(job: str) -> list[int]:
    """The Python task processes of a Slurm job on this (only) machine."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline and f"SLURM_JOB_ID={job}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


class Interrupter:
    """Requeues ``requeued`` at step 7 and puts ``limited`` through its time limit (module docstring):
    call :meth:`poll` in the test's wait loop, and :meth:`release` in its ``finally``."""

    def __init__(self, requeued: Path, limited: Path):
        self.requeued, self.limited = requeued, limited
        self.requeued_id, self.limited_id = job_id(requeued, "train"), job_id(limited, "train")
        self.requeue_sent, self.frozen, self.thawed, self.limit_lifted = False, [], False, False
        self.limited_started = None

    def poll(self) -> None:
        if not self.requeue_sent and current_step(self.requeued) >= 7:
            subprocess.run(["scontrol", "requeue", self.requeued_id], check=True, capture_output=True)
            self.requeue_sent = True
        if self.limited_started is None and attempts(self.limited):
            self.limited_started = attempts(self.limited)[0]["time"]
        if not self.frozen and current_step(self.limited) >= 1:
            self.frozen = task_pids(self.limited_id)
            for pid in self.frozen:
                os.kill(pid, signal.SIGSTOP)
        if self.frozen and not self.thawed and time.time() - self.limited_started > 61:
            thaw(self.frozen)  # (slurmstepd sends SIGCONT with the warning signal itself, too)
            self.thawed = True
        if not self.limit_lifted and any(e["event"] == "end" for e in attempts(self.limited)):
            # The time limit did its job once; let the requeued attempt finish.
            subprocess.run(["scontrol", "update", f"JobId={self.limited_id}", "TimeLimit=30"], check=True,
                           capture_output=True)
            self.limit_lifted = True

    def release(self) -> None:
        """Never leave frozen tasks behind, whatever happened."""
        if not self.thawed:
            thaw(self.frozen)
