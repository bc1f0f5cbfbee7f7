"""``phi-hpc cancel RUN``: stop a run's unfinished jobs.

Slurm jobs get ``scancel`` (SIGTERM to every task, so a training run checkpoints at its next step
before the KillWait grace period ends); local jobs get SIGTERM on submitit's controller process,
which forwards it to the tasks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

from phi_hpc.errors import PhiError
from phi_hpc.launch.jobs import cancel_slurm, on_this_host
from phi_hpc.launch.runs import load_run, read_attempts
from phi_hpc.launch.watch import job_states, pick_job


def cancel_run(run_dir: Path, job_name: str | None = None) -> Iterator[str]:
    """Cancel what is unfinished. States come from Slurm and, for jobs it no longer knows (no accounting,
    purged after MinJobAge), from the run's records: a finished job is reported, never scancel'ed."""
    record = load_run(run_dir)
    jobs = [pick_job(record, job_name)] if job_name else list(record.jobs)
    states = job_states(record, jobs, read_attempts(run_dir))
    to_cancel = []
    for job in jobs:
        state = states[job.job_id]
        if state.finished:
            yield f"{job.name} ({job.job_id}): already {state.state}"
        elif job.executor == "slurm":
            to_cancel.append(job)
    if to_cancel:
        done = cancel_slurm([job.job_id for job in to_cancel])
        if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
            raise PhiError(f"scancel failed: {done.stderr.strip()}", "check `squeue --me`")
        for job in to_cancel:
            yield f"{job.name} ({job.job_id}): cancelled"
    for job in jobs:
        if job.executor != "local" or states[job.job_id].finished:
            continue
        if not on_this_host(job.host):
            yield f"{job.name} ({job.job_id}): a local job of {job.host}; run `phi-hpc cancel` there"
            continue
        try:
            os.kill(int(job.job_id), signal.SIGTERM)
            yield f"{job.name} ({job.job_id}): sent SIGTERM"
        except ProcessLookupError:
            yield f"{job.name} ({job.job_id}): process already gone"
