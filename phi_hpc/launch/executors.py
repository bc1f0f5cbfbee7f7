"""Which submitit executor runs a job, and with which sbatch parameters.

Slurm where ``sbatch`` exists *and* the controller answers (a login node of a cluster, or the local
test cluster); otherwise submitit's local executor, which runs the same tasks as processes on this
machine (a laptop, a CI box without Slurm). ``--cluster slurm|local`` forces one.

The sbatch script is produced by submitit itself, also for ``--dry-run``, so what is printed is
exactly what ``sbatch`` would receive.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

from phi_hpc.errors import UsageError
from phi_hpc.launch.profiles import ClusterProfile
from phi_hpc.resources import checkout_root

ExecutorKind = Literal["slurm", "local"]
PACKAGE_ROOT = checkout_root()  # a source checkout to put on the jobs' PYTHONPATH; None when installed


def slurm_answers(timeout_s: float = 5.0) -> bool:
    """True when Slurm's client tools are installed and the controller responds."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def choose_executor(requested: str = "auto") -> ExecutorKind:
    if requested == "slurm":
        if shutil.which("sbatch") is None:
            raise UsageError("--cluster slurm: sbatch is not on PATH",
                             "run on a login node, or use --cluster local to run here")
        return "slurm"
    if requested == "local":
        return "local"
    return "slurm" if slurm_answers() else "local"


def setup_lines(profile: ClusterProfile) -> list[str]:
    """Shell lines before srun: site setup, the profile's environment, and where phi_hpc lives."""
    lines = list(profile.setup)
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in sorted(profile.env.items())]
    # The job must import the same phi_hpc that submitted it: a checkout goes on its path; an installed
    # package is found by the same interpreter (submitit runs sys.executable).
    if PACKAGE_ROOT is not None:
        lines.append(f"export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}")
    return lines


def slurm_parameters(profile: ClusterProfile, job_name: str, depends_on: list[str] = ()) -> dict:
    """Keyword arguments for ``SlurmExecutor.update_parameters``."""
    params: dict = {
        "job_name": job_name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.time_minutes,  # submitit's own timeout bookkeeping (minutes)
        "signal_delay_s": profile.signal_delay_s,
        "setup": setup_lines(profile),
        # One dead rank ends the step at once instead of leaving the others blocked in a collective.
        "srun_args": ["--kill-on-bad-exit=1"],
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    for name in ("partition", "account", "qos", "constraint", "mem"):
        value = getattr(profile, name)
        if value is not None:
            params[name] = value
    if profile.exclusive:
        params["exclusive"] = True
    extra = {"time": profile.time, "requeue": True}  # the time as the user wrote it; requeue allowed
    if depends_on:
        extra["dependency"] = "afterok:" + ":".join(depends_on)
        extra["kill_on_invalid_dep"] = "yes"
    params["additional_parameters"] = extra
    return params


def make_executor(kind: ExecutorKind, folder: Path, profile: ClusterProfile, job_name: str,
                  depends_on: list[str] = (), array_parallelism: int | None = None):
    import submitit

    if kind == "slurm":
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues)
        params = slurm_parameters(profile, job_name, depends_on)
        if array_parallelism:
            params["array_parallelism"] = array_parallelism
        executor.update_parameters(**params)
        return executor
    if profile.nodes != 1:
        raise UsageError(f"the local executor runs on this machine only, but --nodes is {profile.nodes}",
                         "use --nodes 1 (or submit from a Slurm login node)")
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.max_requeues)
    executor.update_parameters(timeout_min=profile.time_minutes, tasks_per_node=profile.tasks_per_node,
                               nodes=1, signal_delay_s=profile.signal_delay_s)
    # Local tasks inherit this process's environment: give them the profile's and our package.
    os.environ.update({key: str(value) for key, value in profile.env.items()})
    if PACKAGE_ROOT is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return executor


def render_sbatch(folder: Path, profile: ClusterProfile, job_name: str, depends_on: list[str] = (),
                  array_size: int | None = None, array_parallelism: int | None = None) -> str:
    """The batch script submitit would hand to sbatch (for ``--dry-run`` and the docs)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name, depends_on)
    if array_size:
        params["map_count"] = array_size
        params["array_parallelism"] = array_parallelism or array_size
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=str(folder), **params)
