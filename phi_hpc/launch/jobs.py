"""Job states from the scheduler, in one ``squeue`` and one ``sacct`` call for a whole run.

``squeue`` knows live jobs (and why a pending one waits); ``sacct`` knows finished ones. Without
accounting, or once Slurm has purged a finished job from its memory (``MinJobAge``), neither knows
it, and the run's own records answer: the end event task 0 wrote (:func:`recorded_state`). A job
that squeue (answering) no longer lists and that recorded no end was killed without a chance to
record one: LOST, never "UNKNOWN forever". Local executor jobs (no Slurm) are answered from the same
records, or whether the controller process on the submitting host is still alive.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace

from phi_hpc.constants import SLURM_FAILURE_ORDER, SLURM_FAILURE_STATES, SLURM_TERMINAL_STATES


@dataclass
class JobState:
    job_id: str
    state: str  # Slurm's state name (COMPLETED, RUNNING, PENDING, ...)
    elapsed: str = ""
    reason: str = ""  # squeue's reason for pending jobs, or our explanation
    exit_code: str = ""

    @property
    def finished(self) -> bool:
        return self.state.split()[0] in SLURM_TERMINAL_STATES


def _run(command: list[str], timeout: float = 10.0) -> str | None:
    """The command's output; None when it is missing or failed (not the same as "no such job")."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _rows(output: str, width: int = 4) -> list[list[str]]:
    """The first ``width`` fields of each ``|``-separated line of sacct/squeue output (short lines skipped)."""
    return [parts[:width] for parts in (line.split("|") for line in output.splitlines()) if len(parts) >= width]


def _base_id(job_id: str) -> str:
    return job_id.split("_")[0].split(".")[0].split("+")[0]


def slurm_states(job_ids: Iterable[str], queue_answered: list | None = None) -> dict[str, list[JobState]]:
    """Base job id -> its states (several for an array). Live state wins over accounting.

    ``queue_answered`` (a list) gets True appended when squeue answered: then a job it does not list has
    left Slurm's queue.
    """
    ids = sorted({_base_id(j) for j in job_ids})
    if not ids:
        return {}
    found: dict[str, dict[str, JobState]] = {i: {} for i in ids}
    # sacct: -X = allocations only (no .batch/.0 steps); -P = '|' separated; --duplicates not needed.
    accounting = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,Elapsed,ExitCode"])
    for job, state, elapsed, exit_code in _rows(accounting or ""):
        if (base := _base_id(job)) in found:
            found[base][job] = JobState(job, state.split()[0], elapsed, "", exit_code)
    queue = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%M|%r"])
    if queue is None:  # squeue -j of a purged id fails ("Invalid job id"): ask for all of ours and filter
        queue = _run(["squeue", "-h", "--me", "-o", "%i|%T|%M|%r"])
    if queue is not None and queue_answered is not None:
        queue_answered.append(True)
    for job, state, elapsed, reason in _rows(queue or ""):
        if (base := _base_id(job)) in found:
            found[base][job] = JobState(job, state, elapsed, "" if reason in ("None", "(null)") else reason)
    return {base: list(states.values()) for base, states in found.items()}


NO_ANSWER = "squeue/sacct did not answer"
# What an unfinished array shows, by the first of these any element is in: work under way before waiting.
UNFINISHED_ORDER = ("RUNNING", "COMPLETING", "REQUEUED", "PENDING", "UNKNOWN")
FINAL_STATUS = {"completed": "COMPLETED", "failed": "FAILED", "stopped": "CANCELLED"}


def _events_by_job(attempts: list[dict]) -> dict[str, list[dict]]:
    """The run's records grouped by job id, read once: an array's elements each look up their own, and an
    array can have thousands of elements."""
    events: dict[str, list[dict]] = {}
    for event in attempts:
        events.setdefault(event.get("job_id"), []).append(event)
    return events


def recorded_state(job_id: str, attempts: list[dict], array_size: int | None = None) -> JobState | None:
    """The outcome task 0 recorded (for an array: per element, summarized); None while any is open."""
    if array_size:
        events = _events_by_job(attempts)
        elements = [recorded_state(f"{job_id}_{i}", events.get(f"{job_id}_{i}", [])) for i in range(array_size)]
        if any(state is None for state in elements):
            return None
        return summarize(elements)
    ends = [e for e in attempts if e.get("job_id") == job_id and e.get("event") == "end"]
    if not ends or ends[-1].get("status") not in FINAL_STATUS:
        return None
    last = ends[-1]
    starts = [e for e in attempts if e.get("job_id") == job_id and e.get("event") == "start"]
    return JobState(
        job_id,
        FINAL_STATUS[last["status"]],
        _elapsed(starts, last.get("time")),
        exit_code=str(last.get("exit_code", "")),
        reason=last.get("detail", ""),
    )


def slurm_job_state(
    job_id: str, states: list[JobState], attempts: list[dict], queue_answered: bool, array_size: int | None = None
) -> JobState:
    """Slurm's answer, completed by the run's records when Slurm no longer knows (some of) the job."""
    if array_size:
        return array_job_state(job_id, states, attempts, queue_answered, array_size)
    known = summarize(states)
    if known is not None:
        return known
    recorded = recorded_state(job_id, attempts)
    if recorded is not None:
        recorded.reason = recorded.reason or "from the run's records (Slurm no longer lists the job)"
        return recorded
    if queue_answered:
        return _lost(job_id, attempts)
    return JobState(job_id, "UNKNOWN", reason=NO_ANSWER)


def array_job_state(
    job_id: str, states: list[JobState], attempts: list[dict], queue_answered: bool, array_size: int
) -> JobState:
    """An array, element by element: Slurm's row for the element, else the outcome the element recorded,
    else a row that speaks for several (a pending range, the array's own record before Slurm split it),
    else LOST (squeue answered without it) or UNKNOWN. Never a summary of fewer than ``array_size``
    elements: accounting can list an element's end before it lists the others at all (slurmdbd writes
    the records of split elements late), and one finished row is not a finished array."""
    own: dict[int, JobState] = {}
    covering: list[tuple[set[int], JobState]] = []
    for state in states:
        tail = state.job_id.partition("_")[2]
        if tail.isdigit():
            own[int(tail)] = state
        else:
            covering.append((_covered_elements(state.job_id, array_size), state))
    events = _events_by_job(attempts)
    elements = []
    for index in range(array_size):
        name = f"{job_id}_{index}"
        state = own.get(index) or recorded_state(name, events.get(name, []))
        if state is None:
            row = next((row for covered, row in covering if index in covered), None)
            state = replace(row, job_id=name) if row else None
        if state is None:
            unanswered = JobState(name, "UNKNOWN", reason=NO_ANSWER)
            state = _lost(name, events.get(name, [])) if queue_answered else unanswered
        elements.append(state)
    if all(state.state == "UNKNOWN" for state in elements):
        return JobState(job_id, "UNKNOWN", reason=NO_ANSWER)
    return summarize(elements)


def _covered_elements(job_id: str, array_size: int) -> set[int]:
    """The elements a row that is not one element's speaks for: ``5_[0-2,7%4]`` a pending range (``%4`` is
    the throttle), a bare ``5`` (the array's record before Slurm split it) all of them."""
    _, split, tail = job_id.partition("_")
    if not split:
        return set(range(array_size))
    covered: set[int] = set()
    for part in tail.strip("[]").partition("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high or low).isdigit():
            covered.update(range(int(low), int(high or low) + 1))
    return covered


def _lost(job_id: str, attempts: list[dict]) -> JobState:
    started = any(e.get("job_id") == job_id for e in attempts if e.get("event") == "start")
    return JobState(
        job_id,
        "LOST",
        reason="no longer known to Slurm (no accounting, or purged) and no outcome "
        "recorded: killed before it could record one (memory, node failure, time limit)"
        if started
        else "no longer known to Slurm and never started here (killed or cancelled before the task ran)",
    )


def local_state(job_id: str, attempts: list[dict], host: str | None = None) -> JobState:
    """A submitit local job: its recorded end, else alive/dead by pid (job id = controller pid) on its host."""
    recorded = recorded_state(job_id, attempts)
    if recorded is not None:
        return recorded
    starts = [e for e in attempts if e.get("job_id") == job_id and e.get("event") == "start"]
    if not on_this_host(host):
        return JobState(
            job_id,
            "RUNNING" if starts else "PENDING",
            _elapsed(starts, None),
            reason=f"a local job of {host}: ask there",
        )
    alive = _pid_alive(job_id)
    if not alive:
        return JobState(
            job_id, "LOST" if starts else "FAILED", _elapsed(starts, None), reason="process gone without a recorded end"
        )
    return JobState(job_id, "RUNNING" if starts else "PENDING", _elapsed(starts, None))


def on_this_host(host: str | None) -> bool:
    return host is None or host == socket.gethostname()


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


def summarize(states: list[JobState]) -> JobState | None:
    """One line for an array job. While elements run it is RUNNING/PENDING; once all ended it is FAILED if
    any element failed (the reason names the worst ones), CANCELLED if any was cancelled, else COMPLETED."""
    if not states:
        return None
    if len(states) == 1:
        return states[0]
    counts: dict[str, int] = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
    failed = sorted(
        (s for s in states if s.state in SLURM_FAILURE_STATES),
        key=lambda s: (SLURM_FAILURE_ORDER.index(s.state), _element(s.job_id)),
    )
    if not all(s.finished for s in states):
        overall = next((s for s in UNFINISHED_ORDER if s in counts), "RUNNING")
    elif failed:
        overall = "FAILED"
    elif "CANCELLED" in counts:
        overall = "CANCELLED"
    else:
        overall = "COMPLETED"
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if failed:
        named = ", ".join(f"element {_element(s.job_id)} {s.state}" for s in failed[:3])
        detail = f"{named}{' ...' if len(failed) > 3 else ''} ({detail})"
    elapsed = max((s.elapsed for s in states), default="")
    return JobState(_base_id(states[0].job_id), overall, elapsed, detail)


def _element(job_id: str) -> str:
    return job_id.partition("_")[2] or job_id


def cancel_slurm(job_ids: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
