"""``submit pretrain|finetune``: validate the config here, then one training job (its evals follow it).

The config is loaded and checked on the login node (a typo fails in milliseconds, not after the job
waited in the queue), resolved, and written to ``RUN/config.yaml``; every task runs
``phi-hpc train RUN/config.yaml``. Resubmitting into the same folder resumes from its checkpoints.

``--eval-every N``: one ``eval run`` job per checkpoint at steps N, 2N, ..., each submitted by the
training job itself as soon as the trainer publishes that step (:mod:`phi_hpc.launch.evals`), with
the eval profile (``--eval-profile``; default: the training profile's ``eval:`` job profile). Results go to
``RUN/eval/step-N`` where ``phi-hpc eval curve`` and ``phi-hpc status`` find them. A checkpoint
published before training fails is still evaluated. ``--dry-run`` shows the eval job's script too.

Nothing a job reads comes from the network: the config's tokenizer and the eval jobs' tokenizer and
MBPP files are fetched here, on the login node, and the jobs get their cached paths
(:mod:`phi_hpc.launch.offline`).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.launch.evals import EvalPlan
from phi_hpc.launch.offline import localize_eval_args
from phi_hpc.launch.requests import TrainingRequest
from phi_hpc.run_layout import RunLayout


def submit_training(request: TrainingRequest, echo=print) -> None:
    from phi_hpc.config import dump_yaml
    from phi_hpc.launch.profiles import load_profile
    from phi_hpc.launch.submit import make_submitter
    from phi_hpc.train.config import load_train_config

    profile = request.cluster.load_profile()
    eval_profile = load_profile(request.eval_profile) if request.eval_profile else None
    config = load_train_config(request.config_file, list(request.overrides))
    run_dir = Path(request.cluster.run_dir or config.run_dir).resolve()
    config = dataclasses.replace(config, run_dir=str(run_dir))
    _check_batch(config, profile)
    eval_steps = _eval_steps(config, request.eval_every)
    submitter = make_submitter(request.kind, run_dir, request.cluster, profile, echo)
    submitter.open()
    config_path = RunLayout(run_dir).config
    if not submitter.dry_run:
        dump_yaml(config, config_path)
    plan = (
        EvalPlan(
            steps=tuple(eval_steps),
            eval_args=tuple(localize_eval_args(shlex.split(request.eval_args))),
            profile=eval_profile or profile.for_job("eval"),
            executor=submitter.executor,
        )
        if eval_steps
        else None
    )
    _warn_signal_delay(run_dir, profile)
    submitter.submit("train", ["train", str(config_path)], eval_plan=plan)
    if plan is not None and submitter.dry_run:  # what the training job will submit, step by step
        for step in plan.steps:
            submitter.submit(plan.job_name(step), plan.argv(run_dir, step), profile=plan.profile)
    submitter.finish()


def _warn_signal_delay(run_dir: Path, profile) -> None:
    """A resubmission knows its step and checkpoint times: say so when the signal would come too late."""
    import sys

    from phi_hpc.launch.watch import signal_delay_warning

    warning = signal_delay_warning(run_dir, profile.signal_delay_s)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _check_batch(config, profile) -> None:
    """The global batch must split evenly over the job's processes: say so before queueing."""
    try:
        config.batch.accumulation_steps(profile.num_tasks)
    except UsageError as exc:
        raise UsageError(
            f"{exc.message} ({profile.nodes} node(s) x {profile.tasks_per_node} tasks)",
            "change --nodes/--tasks-per-node or batch.micro_size/global_size",
        ) from None


def _eval_steps(config, eval_every: int | None) -> list[int]:
    if not eval_every:
        return []
    if eval_every < 1 or eval_every % config.checkpoint.every:
        raise UsageError(
            f"--eval-every {eval_every} is not a multiple of checkpoint.every={config.checkpoint.every}",
            "evaluations read saved checkpoints: pick a multiple, or --set checkpoint.every=N",
        )
    return list(range(eval_every, config.steps + 1, eval_every))
