"""``logs``: a job's log files, printed like ``tail [-f]`` across requeues and ranks.

Split from :mod:`phi_hpc.launch.watch` (``status``) because following is a loop of its own: file
positions per rank, the switch to a requeued job's next attempt folder, and a scheduler query that
backs off while nothing changes. Which attempt folders a job has and which job a run's ``--job``
names are decided once, in ``watch``, and used from there. Nothing here imports torch (a test checks
it): ``logs -f`` runs on login nodes for as long as a job runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from phi_hpc.errors import UsageError
from phi_hpc.fileio import tail_lines
from phi_hpc.launch.jobs import recorded_state
from phi_hpc.launch.runs import JobRecord, RunRecord, load_run, read_attempts
from phi_hpc.launch.watch import attempt_dirs, job_states, pick_job

FOLLOW_POLL_MIN_S, FOLLOW_POLL_MAX_S = 5.0, 60.0  # logs --follow: scheduler queries back off between these


def _job_finished(record: RunRecord, job: JobRecord, run_dir: Path) -> bool:
    return job_states(record, [job], read_attempts(run_dir))[job.job_id].finished


def follow_logs(
    run_dir: Path,
    job_name: str | None,
    rank: int | None,
    stderr: bool,
    lines: int,
    follow: bool,
    out: TextIO = sys.stdout,
    poll_s: float = 0.5,
) -> None:
    """Print the newest attempt's log (last ``lines`` lines); with ``follow``, keep printing new lines,
    move on to the next attempt's files after a requeue, and stop once the job has finished.

    ``rank=None`` prints every rank's file (on several nodes: every node's tasks), each line prefixed
    with ``[rankN]``; files that appear later (a slow rank) are picked up as they come.
    """
    record = load_run(run_dir)
    job = pick_job(record, job_name)
    suffix = ".err" if stderr else ".out"
    attempts = attempt_dirs(run_dir, job)
    if not attempts and not follow:
        raise UsageError(
            f"no logs yet for job {job.name} ({job.job_id})",
            "it has not started; `phi-hpc status` says why, or add --follow to wait",
        )
    current = attempts[-1] if attempts else None
    positions: dict[str, int] = {}
    if current is not None:
        for name in _rank_files(current, rank, suffix):
            path = current / name
            for line in tail_lines(path, lines):
                out.write(_prefixed(line + "\n", name, rank))
            positions[name] = path.stat().st_size if path.exists() else 0
        out.flush()
    if not follow:
        return
    if current is None:
        print(f"[phi-hpc logs] waiting for job {job.name} ({job.job_id}) to start", file=sys.stderr, flush=True)
    # The scheduler is asked at most every FOLLOW_POLL_MIN_S, backing off to FOLLOW_POLL_MAX_S while nothing
    # changes (a week of `logs -f` must not hammer slurmctld); new output or a new attempt resets it.
    last_check, finished_seen, check_every = 0.0, False, FOLLOW_POLL_MIN_S
    while True:
        before = dict(positions)
        if current is not None:
            for name in _rank_files(current, rank, suffix):
                positions[name] = _copy_new(
                    current / name, positions.get(name, 0), out, lambda text, name=name: _prefixed(text, name, rank)
                )
        attempts = attempt_dirs(run_dir, job)
        newer = [a for a in attempts if current is None or attempts.index(a) > _index(attempts, current)]
        if newer:
            current, positions, check_every = newer[0], {}, FOLLOW_POLL_MIN_S
            shown = f"rank{rank}{suffix}" if rank is not None else f"rank*{suffix}"
            out.write(f"==> {current.relative_to(run_dir)}/{shown} <==\n")
            out.flush()
            continue
        if positions != before:
            check_every = FOLLOW_POLL_MIN_S
        now = time.monotonic()
        if finished_seen or _ended_by_records(run_dir, job) or now - last_check >= check_every:
            last_check = now
            if finished_seen:  # one more pass after the job ended: nothing left to print
                return
            finished_seen = _job_finished(record, job, run_dir)
            check_every = min(check_every * 2, FOLLOW_POLL_MAX_S)
        time.sleep(poll_s)


def _ended_by_records(run_dir: Path, job: JobRecord) -> bool:
    """A recorded final outcome (a file read, no scheduler query) lets --follow stop without waiting for the
    next query."""
    return recorded_state(job.job_id, read_attempts(run_dir), job.array_size) is not None


def _rank_files(attempt: Path, rank: int | None, suffix: str) -> list[str]:
    if rank is not None:
        return [f"rank{rank}{suffix}"]
    found = [p.name for p in attempt.glob(f"rank*{suffix}") if p.name[4 : -len(suffix)].isdigit()]
    return sorted(found, key=lambda name: int(name[4 : -len(suffix)]))


def _prefixed(text: str, name: str, rank: int | None) -> str:
    if rank is not None:
        return text
    tag = f"[{name.partition('.')[0]}] "
    return "".join(tag + line for line in text.splitlines(keepends=True))


def _index(attempts: list[Path], current: Path) -> int:
    return attempts.index(current) if current in attempts else -1


def _copy_new(path: Path, position: int, out: TextIO, transform=lambda text: text) -> int:
    """Write whatever was appended to ``path`` since ``position`` (complete lines only)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(position)
            data = handle.read()
    except OSError:
        return position
    end = data.rfind(b"\n")
    if end < 0:
        return position
    out.write(transform(data[: end + 1].decode("utf-8", errors="replace")))
    out.flush()
    return position + end + 1
