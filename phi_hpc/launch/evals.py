"""Eval jobs: ``submit eval`` (one checkpoint), and evaluations while training
(``submit pretrain --eval-every N``).

``submit eval`` runs ``eval run --checkpoint PATH [EVAL_ARGS]`` in one job, after the ``--after`` jobs
(a job id, or a run folder: its training job) succeeded; results go to ``RUN/eval/<step-N|latest>``
when the checkpoint is inside a submitted run.

phi-1 pretrains for about four days; pass@1 of each checkpoint should be visible as it comes, and a
run that dies on day three should still have its first checkpoints scored. So no eval job is queued
at submission (an ``afterok`` chain would start them all at the end, and cancel them all if training
failed). Instead the training job's task 0, when the trainer publishes a wanted step and its snapshot
is taken (:mod:`phi_hpc.launch.snapshots`), submits that step's ``eval run`` job itself, through the
same submitter and executor, with the eval profile (``--eval-profile``: fewer GPUs, a shorter time
limit, another partition) and a clean environment (no ``SLURM_*`` of the training allocation).

Submissions are recorded in ``run.json`` like any other, and are idempotent: a requeued training job
publishes its steps again, and a step whose eval job is already recorded is not submitted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.launch.profiles import ClusterProfile
from phi_hpc.launch.requests import EvalRequest
from phi_hpc.run_layout import RunLayout


@dataclass(frozen=True)
class EvalPlan:
    """What the training job submits when it publishes a checkpoint (pickled with the job)."""

    steps: tuple[int, ...]
    eval_args: tuple[str, ...]
    profile: ClusterProfile
    executor: str  # "slurm" | "local": the training job's own

    @staticmethod
    def job_name(step: int) -> str:
        return f"eval-step-{step}"

    def argv(self, run_dir: Path, step: int) -> list[str]:
        layout = RunLayout(run_dir)
        return [
            "eval",
            "run",
            "--checkpoint",
            str(layout.snapshot_dir(step)),
            "-o",
            str(layout.eval_dir(step)),
            *self.eval_args,
        ]

    def on_snapshot(self, run_dir: Path) -> Callable[[int], None]:
        """What the training job's task 0 calls once a wanted step's snapshot exists (:class:`PhiTask`)."""
        return step_eval_submitter(run_dir, self)


def submit_step_eval(run_dir: Path, plan: EvalPlan, step: int, echo: Callable[[str], None] = print) -> str | None:
    """Submit step ``step``'s eval job unless ``run.json`` already has one; its job id, or None."""
    from phi_hpc.launch.runs import load_run
    from phi_hpc.launch.submit import Submitter

    record = load_run(run_dir)
    if record.job(plan.job_name(step)) is not None:
        return None
    submitter = Submitter(
        run_dir=Path(run_dir),
        kind=record.kind,
        profile=plan.profile,
        executor=plan.executor,
        command=record.command,
        echo=echo,
    )
    submitter.open()
    # (Submitter submits in a clean environment: not the training allocation's SLURM_*/RANK/MASTER_*.)
    return submitter.submit(plan.job_name(step), plan.argv(Path(run_dir), step))


def step_eval_submitter(run_dir: Path, plan: EvalPlan) -> Callable[[int], None]:
    """The snapshot watcher's callback: submit, and never let a failed submission stop training."""

    def submit(step: int) -> None:
        try:
            submit_step_eval(run_dir, plan, step, echo=lambda line: print(f"[phi-hpc] {line}", flush=True))
        except Exception as exc:  # noqa: BLE001 (sbatch refusing must not cost the training run)
            print(
                f"[phi-hpc] could not submit the eval of step {step}: {exc}; submit it by hand: phi-hpc submit "
                f"eval --checkpoint {RunLayout(run_dir).snapshot_dir(step)}",
                flush=True,
            )

    return submit


def submit_evaluation(request: EvalRequest, echo: Callable[[str], None] = print) -> None:
    """``submit eval``: one ``eval run`` job for one checkpoint."""
    from phi_hpc.launch.offline import localize_eval_args
    from phi_hpc.launch.submit import checkpoint_label, live_dependencies, make_submitter, resolve_after, run_folder_of

    profile = request.cluster.load_profile(job="eval")
    after_ids, parent_run = resolve_after(request.after)
    checkpoint_path = Path(request.checkpoint)
    owner = run_folder_of(checkpoint_path) or parent_run
    label = checkpoint_label(checkpoint_path)
    output = request.output
    if output is None:
        if owner is None:
            raise UsageError("-o/--output is required when the checkpoint is not inside a submitted run")
        output = str(RunLayout(owner).eval_root / label)
    run_dir = Path(request.cluster.run_dir or owner or output)
    submitter = make_submitter("eval", run_dir, request.cluster, profile, echo)
    if not submitter.dry_run:
        after_ids = live_dependencies(after_ids, submitter.executor, parent_run, echo=echo)
    submitter.open()
    argv = [
        "eval",
        "run",
        "--checkpoint",
        str(checkpoint_path.resolve()),
        "-o",
        str(Path(output).resolve()),
        *localize_eval_args(list(request.eval_args)),
    ]
    submitter.submit(f"eval-{label}", argv, depends_on=after_ids, wait_for_local=after_ids)
    submitter.finish()
