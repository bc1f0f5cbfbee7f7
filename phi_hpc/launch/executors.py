"""Which submitit executor runs a job, and with which sbatch parameters.

``auto`` means Slurm wherever ``sbatch`` exists (a login node of a cluster, or the local test
cluster); a controller that does not answer there is an error, never a reason to train on the login
node. Only without ``sbatch`` (a laptop, a CI box without Slurm) does ``auto`` mean submitit's local
executor, which runs the same tasks as processes on this machine. ``--cluster slurm|local`` forces one.

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

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.launch.profiles import ClusterProfile
from phi_hpc.resources import checkout_root

ExecutorKind = Literal["slurm", "local"]
SINFO_TIMEOUT_ENV = "PHI_HPC_SINFO_TIMEOUT"  # seconds (default 20): how long a busy controller may take


def slurm_problem(timeout_s: float | None = None) -> str:
    """Why the controller does not answer ``sinfo`` ("" when it does)."""
    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get(SINFO_TIMEOUT_ENV, "20"))
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {timeout_s:g} s"
    except OSError as exc:
        return f"sinfo: {exc}"
    if done.returncode != 0:
        return f"sinfo exited {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:200]}"
    return ""


def slurm_answers(timeout_s: float | None = None) -> bool:
    """True when Slurm's client tools are installed and the controller responds."""
    return shutil.which("sbatch") is not None and not slurm_problem(timeout_s)


def choose_executor(requested: str = "auto") -> ExecutorKind:
    if requested == "slurm":
        if shutil.which("sbatch") is None:
            raise UsageError(
                "--cluster slurm: sbatch is not on PATH", "run on a login node, or use --cluster local to run here"
            )
        return "slurm"
    if requested == "local":
        return "local"
    if shutil.which("sbatch") is None:
        return "local"
    problem = slurm_problem()
    if problem:
        raise PhiError(
            f"--cluster auto: sbatch is here but the Slurm controller does not answer ({problem}); nothing was started",
            "retry in a minute, or use --cluster local to really run on this machine",
        )
    return "slurm"


def setup_lines(profile: ClusterProfile, code_root: Path | None = None) -> list[str]:
    """Shell lines before srun: site setup, the profile's environment, and where phi_hpc lives."""
    lines = list(profile.setup)
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in sorted(profile.env.items())]
    # The job imports the phi_hpc that was submitted (RUN/code/<hash>: requeues days later too); without
    # a copy, a source checkout goes on its path and an installed package needs nothing (same interpreter).
    root = code_root or checkout_root()
    if root is not None:
        lines.append(f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}")
    return lines


def srun_arguments(profile: ClusterProfile) -> list[str]:
    """srun's own flags. ``--cpus-per-task`` explicitly: srun of Slurm 22.05-23.02 does not inherit it
    from sbatch, and under task/affinity or task/cgroup every rank would be pinned to one CPU."""
    # One dead rank ends the step at once instead of leaving the others blocked in a collective.
    return ["--kill-on-bad-exit=1", f"--cpus-per-task={profile.cpus_per_task}", *profile.srun_args]


def slurm_parameters(
    profile: ClusterProfile, job_name: str, depends_on: list[str] = (), code_root: Path | None = None
) -> dict:
    """Keyword arguments for ``SlurmExecutor.update_parameters``."""
    params: dict = {
        "job_name": job_name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.time_minutes,  # submitit's own timeout bookkeeping (minutes)
        "signal_delay_s": profile.signal_delay_s,
        "setup": setup_lines(profile, code_root),
        "srun_args": srun_arguments(profile),
        "wckey": profile.wckey,  # None: no --wckey line (submitit would send "submitit")
    }
    if profile.gpus_per_node and not profile.gres:
        params["gpus_per_node"] = profile.gpus_per_node
    for name in ("partition", "account", "qos", "constraint", "mem"):
        value = getattr(profile, name)
        if value is not None:
            params[name] = value
    if profile.exclusive:
        params["exclusive"] = True
    extra = {"time": profile.time, "requeue": True}  # the time as the user wrote it; requeue allowed
    for name in ("mem_per_cpu", "reservation", "exclude", "gres"):
        value = getattr(profile, name)
        if value is not None:
            extra[name] = value
    if depends_on:
        extra["dependency"] = "afterok:" + ":".join(depends_on)
        extra["kill_on_invalid_dep"] = "yes"
    params["additional_parameters"] = extra
    return params


# Requeue decisions are PhiTask's (progress-based max_requeues); submitit's own counter must not interfere.
SUBMITIT_MAX_NUM_TIMEOUT = 1_000_000


def make_executor(
    kind: ExecutorKind,
    folder: Path,
    profile: ClusterProfile,
    job_name: str,
    depends_on: list[str] = (),
    array_parallelism: int | None = None,
    code_root: Path | None = None,
):
    import submitit

    if kind == "slurm":
        executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=SUBMITIT_MAX_NUM_TIMEOUT, python=profile.python
        )
        params = slurm_parameters(profile, job_name, depends_on, code_root)
        if array_parallelism:
            params["array_parallelism"] = array_parallelism
        executor.update_parameters(**params)
        return executor
    if profile.nodes != 1:
        raise UsageError(
            f"the local executor runs on this machine only, but --nodes is {profile.nodes}",
            "use --nodes 1 (or submit from a Slurm login node)",
        )
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=SUBMITIT_MAX_NUM_TIMEOUT)
    executor.update_parameters(
        timeout_min=profile.time_minutes,
        tasks_per_node=profile.tasks_per_node,
        nodes=1,
        signal_delay_s=profile.signal_delay_s,
    )
    # Local tasks inherit this process's environment: give them the profile's and our package.
    os.environ.update({key: str(value) for key, value in profile.env.items()})
    root = code_root or checkout_root()
    if root is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return executor


def render_sbatch(
    folder: Path,
    profile: ClusterProfile,
    job_name: str,
    depends_on: list[str] = (),
    array_size: int | None = None,
    array_parallelism: int | None = None,
) -> str:
    """The batch script submitit would hand to sbatch (for ``--dry-run`` and the docs)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name, depends_on, code_root=folder.parent / "code" / "<hash>")
    if array_size:
        params["map_count"] = array_size
        params["array_parallelism"] = array_parallelism or array_size
    python = profile.python or shlex.quote(sys.executable)
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=str(folder), **params)
