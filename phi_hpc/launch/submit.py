"""Turn a config into submitted jobs: one training job, evaluation chains, a prepare array.

Everything a submission creates is recorded in the run folder (:mod:`phi_hpc.launch.runs`) before
the call returns, so ``status``/``logs``/``cancel`` work from any later shell. ``dry_run`` builds the
same sbatch scripts and prints them, creating nothing and submitting nothing.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.launch.executors import ExecutorKind, choose_executor, make_executor, render_sbatch
from phi_hpc.launch.profiles import ClusterProfile
from phi_hpc.launch.requests import ClusterRequest
from phi_hpc.launch.runs import JobRecord, RunRecord, git_commit, load_run, remember_run, save_run
from phi_hpc.launch.task import PhiTask
from phi_hpc.paths import PACKAGE_DIR
from phi_hpc.run_layout import RunLayout, eval_label


@dataclass
class Submitter:
    """Submits jobs of one run folder with one profile and executor, recording each in run.json."""

    run_dir: Path
    kind: str
    profile: ClusterProfile
    executor: ExecutorKind
    command: list[str]
    dry_run: bool = False
    echo: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.record: RunRecord | None = None
        self.code_root: Path | None = None

    # ------------------------------------------------------------------ bookkeeping
    def open(self) -> None:
        if self.dry_run:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = RunLayout(self.run_dir).run_record.is_file()
        self.record = (
            load_run(self.run_dir)
            if existing
            else RunRecord(
                kind=self.kind,
                run_dir=str(self.run_dir),
                executor=self.executor,
                profile=dataclasses.asdict(self.profile),
                command=self.command,
                git_commit=git_commit(PACKAGE_DIR),
            )
        )
        if existing:  # a resubmission (e.g. after the requeue limit): same folder, more jobs
            self.record.command = self.command
        save_run(self.record)
        remember_run(self.run_dir)
        from phi_hpc.launch.codecopy import snapshot_code

        self.code_root = snapshot_code(self.run_dir)

    @property
    def submitit_dir(self) -> Path:
        return RunLayout(self.run_dir).submitit

    def job_name(self, name: str) -> str:
        return f"phi-{name}-{self.run_dir.name}"

    # ------------------------------------------------------------------ submission
    def submit(
        self,
        name: str,
        argv: list[str],
        depends_on: list[str] = (),
        profile: ClusterProfile | None = None,
        wait_for_local: list[str] = (),
        eval_plan=None,
    ) -> str:
        """Submit one job running ``phi-hpc ARGV`` in every task; returns its job id."""
        profile = profile or self.profile
        if self.dry_run:
            self.echo(f"# --- job {name}: phi-hpc {' '.join(argv)}")
            self.echo(render_sbatch(self.submitit_dir, profile, self.job_name(name), list(depends_on)))
            return f"<{name}>"
        if self.executor == "local":
            self._check_local_dependencies(wait_for_local)
        task = PhiTask(
            str(self.run_dir),
            name,
            list(argv),
            profile.max_requeues,
            wait_for=list(wait_for_local) if self.executor == "local" else [],
            eval_plan=eval_plan,
        )
        executor = make_executor(
            self.executor,
            self.submitit_dir,
            profile,
            self.job_name(name),
            list(depends_on) if self.executor == "slurm" else [],
            code_root=self.code_root,
        )
        job = self._submit_or_explain(lambda: executor.submit(task))
        self._record(
            JobRecord(
                name=name,
                job_id=str(job.job_id),
                argv=list(argv),
                executor=self.executor,
                depends_on=list(depends_on),
                host=self._host(),
            )
        )
        return str(job.job_id)

    def submit_array(
        self, name: str, argvs: list[list[str]], profile: ClusterProfile | None = None, parallelism: int | None = None
    ) -> str:
        """One Slurm array job, element ``i`` running ``phi-hpc argvs[i]``, at most ``parallelism`` of them
        at a time (``%N``; default all); returns the array's job id."""
        parallelism = min(parallelism or len(argvs), len(argvs))
        profile = profile or self.profile
        if self.dry_run:
            self.echo(f"# --- array job {name} ({len(argvs)} tasks), e.g. phi-hpc {' '.join(argvs[0])}")
            self.echo(
                render_sbatch(
                    self.submitit_dir,
                    profile,
                    self.job_name(name),
                    array_size=len(argvs),
                    array_parallelism=parallelism,
                )
            )
            return f"<{name}>"
        tasks = [PhiTask(str(self.run_dir), name, list(argv), profile.max_requeues) for argv in argvs]
        executor = make_executor(
            self.executor,
            self.submitit_dir,
            profile,
            self.job_name(name),
            array_parallelism=parallelism,
            code_root=self.code_root,
        )
        jobs = self._submit_or_explain(lambda: executor.submit_array(tasks))
        array_id = str(jobs[0].job_id).split("_")[0]
        if self.executor == "local":  # no arrays locally: one job per element, all recorded
            for index, (job, argv) in enumerate(zip(jobs, argvs)):
                self._record(
                    JobRecord(
                        name=f"{name}-{index}",
                        job_id=str(job.job_id),
                        argv=argv,
                        executor=self.executor,
                        host=self._host(),
                    )
                )
            return ",".join(str(job.job_id) for job in jobs)
        self._record(
            JobRecord(name=name, job_id=array_id, argv=argvs[0], executor=self.executor, array_size=len(argvs))
        )
        return array_id

    def _check_local_dependencies(self, job_ids) -> None:
        """Local jobs wait on their parent's records in this run folder: the parent must be in it."""
        known = {job.job_id for job in self.record.jobs} if self.record else set()
        unknown = [job_id for job_id in job_ids if job_id not in known]
        if unknown:
            raise UsageError(
                f"--after {unknown[0]}: not a job of {self.run_dir}",
                "with the local executor, pass the run folder (--after RUN) and keep the results in it",
            )

    def _host(self) -> str | None:
        """Local jobs are process ids of this machine: remember which one (``cancel`` elsewhere must not kill)."""
        return socket.gethostname() if self.executor == "local" else None

    def _submit_or_explain(self, submit):
        try:
            with clean_submission_env():
                return submit()
        except Exception as exc:  # submitit wraps sbatch's stderr in a generic error
            if isinstance(exc, PhiError):
                raise
            message = str(exc).strip().splitlines()
            last = message[-1] if message else type(exc).__name__
            if "dependency" in last.lower():
                raise PhiError(
                    f"submission failed: {last}",
                    "a job it depends on has ended or been purged: `phi-hpc status` of that run "
                    "shows it; resubmit without --after if it completed",
                ) from exc
            raise PhiError(
                f"submission failed: {last}",
                "check the profile's partition/account/qos and `sinfo`; --dry-run shows the script",
            ) from exc

    def finish(self) -> None:
        """Say where to look next (a dry run created nothing)."""
        if not self.dry_run:
            self.echo(
                f"run folder: {self.run_dir}\n  phi-hpc status {self.run_dir}\n  phi-hpc logs {self.run_dir} --follow"
            )

    def _record(self, job: JobRecord) -> None:
        assert self.record is not None
        self.record.jobs.append(job)
        save_run(self.record)
        deps = f" after {','.join(job.depends_on)}" if job.depends_on else ""
        self.echo(f"submitted {job.name}: job {job.job_id}{deps} ({self.executor})")


@contextmanager
def clean_submission_env():
    """Submit as from a fresh login shell: without the SLURM_*/SBATCH_*/SRUN_* variables of an allocation we
    may be inside (salloc, tmux in a step, the training job submitting its evals), which sbatch and the
    new job's srun would otherwise inherit (its CPUs, GPUs, memory, node list), nor RANK/MASTER_*.
    ``SLURM_CONF`` stays: it says which cluster to talk to."""
    import submitit

    conf = os.environ.get("SLURM_CONF")
    with submitit.helpers.clean_env():
        if conf:
            os.environ["SLURM_CONF"] = conf
        yield


# ---------------------------------------------------------------------------- helpers for commands
def resolve_after(after: tuple[str, ...]) -> tuple[list[str], Path | None]:
    """``--after`` values -> job ids. A value may be a job id or a run folder (its training job)."""
    job_ids: list[str] = []
    run_of_parent: Path | None = None
    for value in after:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.replace("_", "").isdigit():
                job_ids.append(item)
                continue
            path = Path(item)
            if not RunLayout(path).run_record.is_file():
                raise UsageError(
                    f"--after {item}: neither a job id nor a run folder with run.json",
                    "give the job id printed by `phi-hpc submit` or its run folder",
                )
            record = load_run(path)
            train = record.job("train") or (record.jobs[-1] if record.jobs else None)  # the newest "train"
            if train is None:
                raise UsageError(f"--after {item}: that run has no jobs")
            job_ids.append(train.job_id)
            run_of_parent = path.resolve()
    return job_ids, run_of_parent


def live_dependencies(
    job_ids: list[str], executor: str, parent_run: Path | None = None, echo: Callable[[str], None] = print
) -> list[str]:
    """The ``--after`` jobs still to wait for: those known to have COMPLETED (by Slurm, or by the parent run's
    records once Slurm has purged them or keeps no accounting) are left out, since afterok on a job Slurm
    forgot is sbatch's "Job dependency problem"; one that failed makes the submission an error (it could
    never start)."""
    if not job_ids:
        return []
    from phi_hpc.launch.jobs import JobState, slurm_job_state, slurm_states
    from phi_hpc.launch.runs import read_attempts

    records = {job.job_id: job for job in load_run(parent_run).jobs} if parent_run else {}
    attempts = read_attempts(parent_run) if parent_run else []
    answered: list = []
    states = slurm_states(job_ids, answered) if executor == "slurm" else {}
    remaining = []
    for job_id in job_ids:
        job = records.get(job_id)
        if executor == "slurm":
            state = slurm_job_state(
                job_id, states.get(job_id, []), attempts if job else [], bool(answered), job.array_size if job else None
            )
        else:
            from phi_hpc.launch.jobs import local_state

            state = local_state(job_id, attempts, job.host if job else None) if job else JobState(job_id, "UNKNOWN")
        if state.state == "COMPLETED":
            echo(f"--after {job_id}: already completed, no dependency needed")
            continue
        if state.finished and not (state.state == "LOST" and not job):
            raise UsageError(
                f"--after {job_id}: that job already ended {state.state}, so this job could never start",
                "fix and resubmit the training run first; `phi-hpc status RUN` shows why it ended",
            )
        remaining.append(job_id)
    return remaining


def run_folder_of(path: Path) -> Path | None:
    """The submitted run a checkpoint path belongs to (RUN/checkpoints/<step> -> RUN), if any."""
    for candidate in [path, *path.parents][:4]:
        if RunLayout(candidate).run_record.is_file():
            return candidate.resolve()
    return None


def checkpoint_label(checkpoint: Path) -> str:
    """``RUN/checkpoints/20`` -> ``step-20`` (eval curve reads RUN/eval/step-N); ``latest`` stays ``latest``."""
    return eval_label(checkpoint.name)


def make_submitter(
    kind: str, run_dir: Path, cluster: ClusterRequest, profile: ClusterProfile, echo: Callable[[str], None] = print
) -> Submitter:
    """The submitter of one ``submit`` command: its executor (``--cluster``), its dry run, and its own command
    line (recorded in run.json). Not opened yet: nothing exists on disk until :meth:`Submitter.open`."""
    return Submitter(
        run_dir=Path(run_dir),
        kind=kind,
        profile=profile,
        executor=executor_for(cluster.cluster, cluster.dry_run),
        command=quoted_command(),
        dry_run=cluster.dry_run,
        echo=echo,
    )


def executor_for(cluster: str, dry_run: bool) -> ExecutorKind:
    """--dry-run always shows the Slurm script (that is what it is for)."""
    return "slurm" if dry_run else choose_executor(cluster)


def quoted_command() -> list[str]:
    return ["phi-hpc", *sys.argv[1:]]
