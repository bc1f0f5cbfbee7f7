"""What a ``submit`` command asks for, as frozen values built once at the command line's edge.

The ``submit`` commands (:mod:`phi_hpc.launch.commands`) turn their click options into one of these
requests and hand it down; the launch code below them never sees click or an options dict, and reads
each option from one typed field instead of popping keys. Light: no click, no torch (``submit
--help`` and ``--dry-run`` run on login nodes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from phi_hpc.constants import DEFAULT_PROFILE
from phi_hpc.errors import UsageError

CLUSTER_CHOICES = ("auto", "slurm", "local")


@dataclass(frozen=True)
class ProfileOverrides:
    """Cluster profile fields given on the command line; None: not given, the profile's value stays."""

    nodes: int | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool | None = None
    signal_delay_s: int | None = None
    max_requeues: int | None = None

    def given(self) -> dict:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class ClusterRequest:
    """Where and how the jobs of one ``submit`` run: the options every submit subcommand shares."""

    profile: str = DEFAULT_PROFILE  # a name in configs/cluster/ or a YAML file
    cluster: str = "auto"  # auto: Slurm when sbatch exists and the controller answers, else local processes
    overrides: ProfileOverrides = field(default_factory=ProfileOverrides)
    run_dir: str | None = None  # None: the command's default (the config's run_dir, OUT/run, ...)
    dry_run: bool = False  # print the sbatch scripts, submit nothing

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTER_CHOICES:
            raise UsageError(f"--cluster {self.cluster}: use one of {', '.join(CLUSTER_CHOICES)}")

    def load_profile(self, job: str | None = None):
        """The profile with the overrides applied; ``job`` ("prepare"/"eval"): that job's profile of the site
        (its own resources, :meth:`ClusterProfile.for_job`), with the overrides on top."""
        from phi_hpc.launch.profiles import load_profile

        return load_profile(self.profile, self.overrides.given(), job=job)


@dataclass(frozen=True)
class TrainingRequest:
    """``submit pretrain|finetune CONFIG``."""

    kind: str  # "pretrain" | "finetune"
    config_file: str
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE
    eval_every: int | None = None  # evaluate every N steps (the training job submits each eval)
    eval_profile: str | None = None  # those eval jobs' profile, used as it is (default: the training one's eval:)
    eval_args: str = "--task humaneval"  # arguments of each `eval run`, one shell-quoted string
    cluster: ClusterRequest = field(default_factory=ClusterRequest)

    def __post_init__(self) -> None:
        if self.kind not in ("pretrain", "finetune"):
            raise ValueError(f"training kind {self.kind!r}: pretrain or finetune")


@dataclass(frozen=True)
class EvalRequest:
    """``submit eval --checkpoint PATH [-- EVAL_ARGS]``."""

    checkpoint: str  # RUN, RUN/checkpoints/latest or RUN/checkpoints/<step>
    after: tuple[str, ...] = ()  # job ids or run folders to wait for
    output: str | None = None  # results folder (default: RUN/eval/<label> inside a submitted run)
    eval_args: tuple[str, ...] = ()  # passed to `eval run` unchanged
    cluster: ClusterRequest = field(default_factory=ClusterRequest)


@dataclass(frozen=True)
class PrepareRequest:
    """``submit prepare PREPARE_ARGS``: prepare's own arguments, run as arrays then reduce and pack."""

    prepare_args: tuple[str, ...]
    max_parallel: int | None = None  # map tasks of one array running at a time (None: all)
    cluster: ClusterRequest = field(default_factory=ClusterRequest)

    def __post_init__(self) -> None:
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UsageError(f"--max-parallel {self.max_parallel}: must be at least 1")


@dataclass(frozen=True)
class ScoreRequest:
    """``submit quality-score SCORE_ARGS``: ``quality score``'s own arguments, one array element per shard."""

    score_args: tuple[str, ...]
    cluster: ClusterRequest = field(default_factory=ClusterRequest)


@dataclass(frozen=True)
class PlanRequest:
    """``plan CONFIG``: what a training run will cost, before it is submitted."""

    config_file: str
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE
    profile: str = DEFAULT_PROFILE
    nodes: int | None = None  # overrides the profile
    time: str | None = None  # each job's time limit; overrides the profile
    gpu: str | None = None  # a100 | h100 | h200 (None: from the profile's constraint)
    mfu: float | None = None  # assumed model FLOPs utilisation ...
    mfu_from: str | None = None  # ... or the median measured by this run (its folder or metrics.jsonl)
    tokens: str | None = None  # train on this many tokens instead of the config's steps ("50B")
    data_dir: str | None = None  # prepared data (manifest.json) for epochs (None: the config's data.paths)
    eval_every: int | None = None  # count the eval jobs of `submit --eval-every N`
    eval_profile: str | None = None  # their profile (None: the training profile's eval: job profile)
    json_path: str | None = None  # also write the plan as JSON here
