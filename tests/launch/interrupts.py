"""The interruptions the Slurm tests put training runs through, driven one poll at a time, and the
``logs --follow`` that watches them.

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
import sys
import threading
import time
from pathlib import Path

from tests.launch.conftest import attempts, cli_env, step_losses


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


class Follower:
    """``phi-hpc logs RUN --follow`` in the background, remembering when each line arrived."""

    def __init__(self, run_dir: Path, *options: str):
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "phi_hpc", "logs", str(run_dir), "--follow", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("logs --follow did not stop after the job ended") from None
        self.thread.join(timeout=10)
        return code

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:  # the test failed before the job ended: do not leave it behind
            self.proc.kill()


class Interrupter:
    """Requeues ``requeued`` at step 7 and puts ``limited`` through its time limit (module docstring):
    call :meth:`poll` in the test's wait loop, inside ``with`` (which thaws the tasks in any case)."""

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
            subprocess.run(
                ["scontrol", "update", f"JobId={self.limited_id}", "TimeLimit=30"], check=True, capture_output=True
            )
            self.limit_lifted = True

    def __enter__(self) -> Interrupter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.thawed:  # never leave frozen tasks behind, whatever happened
            thaw(self.frozen)
