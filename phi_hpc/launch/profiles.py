"""Cluster profiles: the Slurm resources of a job, kept in ``configs/cluster/<name>.yaml``.

Why profiles rather than sbatch flags in every command: the same ``pretrain.yaml`` is submitted to
different machines, and the machine-specific part (GPUs per node, partition, ``module load`` lines,
NCCL knobs) belongs to the machine, not to the experiment. The command line still wins
(``--nodes 4 --time 2-00:00:00``), because that is what people change between two submissions.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi_hpc.config import load_config
from phi_hpc.constants import DEFAULT_PROFILE
from phi_hpc.errors import UsageError
from phi_hpc.resources import known_names, named_config


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and site settings for one job. Per-node counts, like sbatch's ``--*-per-node``."""

    nodes: int = 1
    gpus_per_node: int = 8
    tasks_per_node: int = 8
    cpus_per_task: int = 10
    mem: str | None = None  # sbatch --mem ("0" = whole node); None leaves the site default
    mem_per_cpu: str | None = None  # sbatch --mem-per-cpu (CPU jobs: memory grows with the CPUs asked)
    time: str = "1-00:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    reservation: str | None = None
    exclude: str | None = None  # nodes to avoid, e.g. "gpu[07,12]"
    gres: str | None = None  # typed or other generic resources, e.g. "gpu:a100:8" (instead of gpus_per_node)
    wckey: str | None = None  # only where the site wants one (submitit's default "submitit" is not sent)
    python: str | None = None  # interpreter on the compute nodes (a container's, another architecture's)
    srun_args: list[str] = field(default_factory=list)  # extra srun arguments, e.g. ["--mpi=pmix"]
    signal_delay_s: int = 120
    max_requeues: int = 5
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # The site's data-preparation and evaluation jobs: their own resources (any of the keys above) on top
    # of JOB_DEFAULTS; the site settings (account, qos, reservation, setup, env, ...) are shared.
    prepare: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0 or self.max_requeues < 0 or self.signal_delay_s < 0:
            raise ValueError("gpus_per_node, max_requeues and signal_delay_s must not be negative")
        time_minutes(self.time)  # fail early on a malformed time limit
        if self.mem is not None and self.mem_per_cpu is not None:
            raise ValueError("mem and mem_per_cpu exclude each other (sbatch refuses both): set one to null")
        for kind in ("prepare", "eval"):
            section = getattr(self, kind)
            unknown = sorted(set(section) - set(RESOURCE_KEYS) - set(SITE_KEYS))
            if unknown:
                raise ValueError(f"{kind}: unknown key(s) {', '.join(unknown)}")
            if section:
                self.for_job(kind)  # the derived profile validates itself

    def for_job(self, kind: str) -> ClusterProfile:
        """The profile of a ``prepare`` or ``eval`` job on this site.

        Resources never come from the training job: no GPUs (prepare), no ``--exclusive``, no
        ``--mem=0``, no GPU constraint, no training time limit, but JOB_DEFAULTS[kind] and then this
        profile's ``prepare:``/``eval:`` section. The partition is the section's; without one a CPU job
        uses the cluster's default partition and a GPU job the training partition.
        """
        section = dict(self.prepare if kind == "prepare" else self.eval)
        settings = {**JOB_DEFAULTS[kind], **section}
        if "partition" not in section and (settings.get("gpus_per_node") or settings.get("gres")):
            settings["partition"] = self.partition
        return dataclasses.replace(self, prepare={}, eval={}, **settings)

    @property
    def num_tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def time_minutes(self) -> int:
        return time_minutes(self.time)


# What a job profile replaces of the training profile (the rest are site settings, kept).
RESOURCE_KEYS = (
    "nodes",
    "gpus_per_node",
    "tasks_per_node",
    "cpus_per_task",
    "mem",
    "mem_per_cpu",
    "time",
    "constraint",
    "exclusive",
    "gres",
    "signal_delay_s",
    "max_requeues",
    "partition",
)
SITE_KEYS = ("account", "qos", "reservation", "exclude", "wckey", "python", "srun_args", "setup", "env")
JOB_DEFAULTS: dict[str, dict[str, Any]] = {
    # One process per array element, on CPUs: tokenizing and MinHash scale with cores, memory with them.
    "prepare": {
        "nodes": 1,
        "gpus_per_node": 0,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem": None,
        "mem_per_cpu": "4G",
        "time": "04:00:00",
        "constraint": None,
        "exclusive": False,
        "gres": None,
        "partition": None,
        "max_requeues": 3,
    },
    # One GPU generating completions, CPUs for the sandboxed tests.
    "eval": {
        "nodes": 1,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem": None,
        "mem_per_cpu": "8G",
        "time": "04:00:00",
        "exclusive": False,
        "gres": None,
        "max_requeues": 3,
    },
}


# Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_minutes(text: str) -> int:
    """Slurm time limit -> whole minutes (rounded up), the unit submitit and ``--time`` share."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise ValueError(f"time {text!r} is not a Slurm time (MM, HH:MM:SS, D-HH or D-HH:MM:SS)")
    days, first, second, third = match.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # H:M:S
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # M:S
        seconds = int(first) * 60 + int(second)
    else:  # M
        seconds = int(first) * 60
    return max(1, -(-seconds // 60))


def profile_path(name_or_path: str) -> Path:
    """``a100x8`` -> ``configs/cluster/a100x8.yaml``; an existing file path is used as is."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    named = named_config(name_or_path, "cluster")
    if named is not None:
        return named
    known = known_names("cluster")
    raise UsageError(
        f"--profile {name_or_path}: no such cluster profile",
        f"use a YAML file or one of: {', '.join(known) or '(none)'}",
    )


def load_profile(
    name_or_path: str = DEFAULT_PROFILE, overrides: dict | None = None, job: str | None = None
) -> ClusterProfile:
    """Load a profile (``job``: its prepare/eval job profile) and apply command-line overrides
    (``None`` values mean "not given")."""
    profile = load_config(ClusterProfile, profile_path(name_or_path))
    if job is not None:
        profile = profile.for_job(job)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return profile
    try:
        return dataclasses.replace(profile, **given)
    except ValueError as exc:
        raise UsageError(f"cluster options: {exc}", "fix the option on the command line") from None
