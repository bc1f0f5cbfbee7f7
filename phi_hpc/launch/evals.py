"""Evaluations while training (``submit pretrain --eval-every N``).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from phi_hpc.launch.profiles import ClusterProfile
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
        return ["eval", "run", "--checkpoint", str(layout.snapshot_dir(step)), "-o", str(layout.eval_dir(step)),
                *self.eval_args]


def submit_step_eval(run_dir: Path, plan: EvalPlan, step: int, echo: Callable[[str], None] = print) -> Optional[str]:
    """Submit step ``step``'s eval job unless ``run.json`` already has one; its job id, or None."""
    from phi_hpc.launch.runs import load_run
    from phi_hpc.launch.submit import Submitter

    record = load_run(run_dir)
    if record.job(plan.job_name(step)) is not None:
        return None
    submitter = Submitter(run_dir=Path(run_dir), kind=record.kind, profile=plan.profile, executor=plan.executor,
                          command=record.command, echo=echo)
    submitter.open()
    # (Submitter submits in a clean environment: not the training allocation's SLURM_*/RANK/MASTER_*.)
    return submitter.submit(plan.job_name(step), plan.argv(Path(run_dir), step))


def step_eval_submitter(run_dir: Path, plan: EvalPlan) -> Callable[[int], None]:
    """The snapshot watcher's callback: submit, and never let a failed submission stop training."""

    def submit(step: int) -> None:
        try:
            submit_step_eval(run_dir, plan, step, echo=lambda line: print(f"[phi-hpc] {line}", flush=True))
        except Exception as exc:  # noqa: BLE001 (sbatch refusing must not cost the training run)
            print(f"[phi-hpc] could not submit the eval of step {step}: {exc}; submit it by hand: phi-hpc submit "
                  f"eval --checkpoint {RunLayout(run_dir).snapshot_dir(step)}", flush=True)

    return submit
