"""Job states from the scheduler, in one ``squeue`` and one ``sacct`` call for a whole run.

``squeue`` knows live jobs (and why a pending one waits); ``sacct`` knows finished ones. Local
executor jobs (no Slurm) are answered from the run's own records: the end event task 0 wrote, or
whether the controller process is still alive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Optional

TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE", "LOST"}


@dataclass
class JobState:
    job_id: str
    state: str                    # Slurm's state name (COMPLETED, RUNNING, PENDING, ...)
    elapsed: str = ""
    reason: str = ""              # squeue's reason for pending jobs, or our explanation
    exit_code: str = ""

    @property
    def finished(self) -> bool:
        return self.state.split()[0] in TERMINAL_STATES


def _run(command: list[str], timeout: float = 10.0) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _rows(output: str, width: int = 4) -> list[list[str]]:
    """The first ``width`` fields of each ``|``-separated line of sacct/squeue output (short lines skipped)."""
    return [parts[:width] for parts in (line.split("|") for line in output.splitlines()) if len(parts) >= width]


def _base_id(job_id: str) -> str:
    return job_id.split("_")[0].split(".")[0].split("+")[0]


def slurm_states(job_ids: Iterable[str]) -> dict[str, list[JobState]]:
    """Base job id -> its states (several for an array). Live state wins over accounting."""
    ids = sorted({_base_id(j) for j in job_ids})
    if not ids:
        return {}
    found: dict[str, dict[str, JobState]] = {i: {} for i in ids}
    # sacct: -X = allocations only (no .batch/.0 steps); -P = '|' separated; --duplicates not needed.
    accounting = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,Elapsed,ExitCode"])
    for job, state, elapsed, exit_code in _rows(accounting):
        if (base := _base_id(job)) in found:
            found[base][job] = JobState(job, state.split()[0], elapsed, "", exit_code)
    queue = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%M|%r"])
    for job, state, elapsed, reason in _rows(queue):
        if (base := _base_id(job)) in found:
            found[base][job] = JobState(job, state, elapsed, "" if reason in ("None", "(null)") else reason)
    return {base: list(states.values()) for base, states in found.items()}


def local_state(job_id: str, attempts: list[dict]) -> JobState:
    """A submitit local job: its recorded end, else alive/dead by pid (job id = controller pid)."""
    ends = [e for e in attempts if e.get("job_id") == job_id and e.get("event") == "end"]
    starts = [e for e in attempts if e.get("job_id") == job_id and e.get("event") == "start"]
    final = {"completed": "COMPLETED", "failed": "FAILED", "stopped": "CANCELLED"}
    if ends and ends[-1].get("status") in final:
        last = ends[-1]
        state = final[last["status"]]
        return JobState(job_id, state, _elapsed(starts, last.get("time")), exit_code=str(last.get("exit_code", "")),
                        reason=last.get("detail", ""))
    alive = _pid_alive(job_id)
    if not alive:
        return JobState(job_id, "LOST" if starts else "FAILED", _elapsed(starts, None),
                        reason="process gone without a recorded end")
    return JobState(job_id, "RUNNING" if starts else "PENDING", _elapsed(starts, None))


def _elapsed(starts: list[dict], end: float | None) -> str:
    if not starts:
        return ""
    import time

    seconds = int((end or time.time()) - starts[0]["time"])
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _pid_alive(job_id: str) -> bool:
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def summarize(states: list[JobState]) -> Optional[JobState]:
    """One line for an array job: 'RUNNING (3 COMPLETED, 2 RUNNING)'-style aggregate."""
    if not states:
        return None
    if len(states) == 1:
        return states[0]
    counts: dict[str, int] = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
    order = ["FAILED", "CANCELLED", "TIMEOUT", "RUNNING", "PENDING", "COMPLETED"]
    overall = next((s for s in order if s in counts), next(iter(counts)))
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    elapsed = max((s.elapsed for s in states), default="")
    return JobState(_base_id(states[0].job_id), overall, elapsed, detail)


def cancel_slurm(job_ids: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
