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
from typing import Optional

from phi_hpc.config import load_config
from phi_hpc.resources import known_names, named_config
from phi_hpc.errors import UsageError

DEFAULT_PROFILE = "a100x8"


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and site settings for one job. Per-node counts, like sbatch's ``--*-per-node``."""

    nodes: int = 1
    gpus_per_node: int = 8
    tasks_per_node: int = 8
    cpus_per_task: int = 10
    mem: Optional[str] = None          # sbatch --mem ("0" = whole node); None leaves the site default
    time: str = "1-00:00:00"
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclusive: bool = False
    signal_delay_s: int = 120
    max_requeues: int = 5
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0 or self.max_requeues < 0 or self.signal_delay_s < 0:
            raise ValueError("gpus_per_node, max_requeues and signal_delay_s must not be negative")
        time_minutes(self.time)  # fail early on a malformed time limit

    @property
    def num_tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def time_minutes(self) -> int:
        return time_minutes(self.time)


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
    raise UsageError(f"--profile {name_or_path}: no such cluster profile",
                     f"use a YAML file or one of: {', '.join(known) or '(none)'}")


def load_profile(name_or_path: str = DEFAULT_PROFILE, overrides: dict | None = None) -> ClusterProfile:
    """Load a profile and apply command-line overrides (``None`` values mean "not given")."""
    profile = load_config(ClusterProfile, profile_path(name_or_path))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return profile
    try:
        return dataclasses.replace(profile, **given)
    except ValueError as exc:
        raise UsageError(f"cluster options: {exc}", "fix the option on the command line") from None
