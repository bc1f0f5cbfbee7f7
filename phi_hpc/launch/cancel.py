"""``phi-hpc cancel RUN``: stop a run's unfinished jobs.

Slurm jobs get ``scancel`` (SIGTERM to every task, so a training run checkpoints at its next step
before the KillWait grace period ends); local jobs get SIGTERM on submitit's controller process,
which forwards it to the tasks.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator, Optional

from phi_hpc.errors import PhiError
from phi_hpc.launch.jobs import cancel_slurm, local_state, slurm_states, summarize
from phi_hpc.launch.runs import load_run, read_attempts
from phi_hpc.launch.watch import pick_job


def cancel_run(run_dir: Path, job_name: Optional[str] = None) -> Iterator[str]:
    record = load_run(run_dir)
    jobs = [pick_job(record, job_name)] if job_name else list(record.jobs)
    slurm_jobs = [job for job in jobs if job.executor == "slurm"]
    states = slurm_states([job.job_id for job in slurm_jobs]) if slurm_jobs else {}
    to_cancel = []
    for job in slurm_jobs:
        state = summarize(states.get(job.job_id, []))
        if state is not None and state.finished:
            yield f"{job.name} ({job.job_id}): already {state.state}"
        else:
            to_cancel.append(job)
    if to_cancel:
        done = cancel_slurm([job.job_id for job in to_cancel])
        if done.returncode != 0:
            raise PhiError(f"scancel failed: {done.stderr.strip()}", "check `squeue --me`")
        for job in to_cancel:
            yield f"{job.name} ({job.job_id}): cancelled"
    attempts = read_attempts(run_dir)
    for job in jobs:
        if job.executor != "local":
            continue
        if local_state(job.job_id, attempts).finished:
            yield f"{job.name} ({job.job_id}): already finished"
            continue
        try:
            os.kill(int(job.job_id), signal.SIGTERM)
            yield f"{job.name} ({job.job_id}): sent SIGTERM"
        except ProcessLookupError:
            yield f"{job.name} ({job.job_id}): process already gone"
