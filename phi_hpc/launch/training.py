"""``submit pretrain|finetune``: validate the config here, then one training job (+ its eval chain).

The config is loaded and checked on the login node (a typo fails in milliseconds, not after the job
waited in the queue), resolved, and written to ``RUN/config.yaml``; every task runs
``phi-hpc train RUN/config.yaml``. Resubmitting into the same folder resumes from its checkpoints.

``--eval-every N``: one ``eval run`` job per checkpoint at steps N, 2N, ..., submitted now with
``afterok`` on the training job and ``--kill-on-invalid-dep=yes``, so a failed training run cancels
them all. The trainer prunes old checkpoints (``checkpoint.keep_last``), so task 0 of the training job
keeps a hard-linked copy of each of those checkpoints' model files in ``RUN/eval/checkpoints/<N>``
(see :mod:`phi_hpc.launch.snapshots`): that is what the eval jobs read; results go to
``RUN/eval/step-N`` where ``phi-hpc eval curve`` finds them.

Nothing a job reads comes from the network: the config's tokenizer and the eval jobs' tokenizer and
MBPP files are fetched here, on the login node, and the jobs get their cached paths
(:mod:`phi_hpc.launch.offline`).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.launch.offline import localize_eval_args
from phi_hpc.launch.snapshots import snapshot_dir


def submit_training(kind: str, config_file: str, overrides: list[str], profile, options: dict,
                    eval_every: int | None, eval_args: str, make_submitter, finish) -> None:
    from phi_hpc.config import dump_yaml
    from phi_hpc.train.config import load_train_config

    config = load_train_config(config_file, overrides)
    run_dir = Path(options.pop("run_dir") or config.run_dir).resolve()
    config = dataclasses.replace(config, run_dir=str(run_dir))
    _check_batch(config, profile)
    eval_steps = _eval_steps(config, eval_every)
    submitter = make_submitter(run_dir)
    submitter.open()
    config_path = run_dir / "config.yaml"
    if not submitter.dry_run:
        dump_yaml(config, config_path)
    train_id = submitter.submit("train", ["train", str(config_path)], snapshot_steps=eval_steps)
    eval_profile = dataclasses.replace(profile, nodes=1)
    job_eval_args = localize_eval_args(shlex.split(eval_args)) if eval_steps else []
    for step in eval_steps:
        model_dir = snapshot_dir(run_dir, step)
        eval_argv = ["eval", "run", "--checkpoint", str(model_dir), "-o", str(run_dir / "eval" / f"step-{step}"),
                     *job_eval_args]
        submitter.submit(f"eval-step-{step}", eval_argv, depends_on=[train_id], profile=eval_profile,
                         wait_for_local=[train_id])
    finish(submitter)


def _check_batch(config, profile) -> None:
    """The global batch must split evenly over the job's processes: say so before queueing."""
    try:
        config.batch.accumulation_steps(profile.num_tasks)
    except UsageError as exc:
        raise UsageError(f"{exc.message} ({profile.nodes} node(s) x {profile.tasks_per_node} tasks)",
                         "change --nodes/--tasks-per-node or batch.micro_size/global_size") from None


def _eval_steps(config, eval_every: int | None) -> list[int]:
    if not eval_every:
        return []
    if eval_every < 1 or eval_every % config.checkpoint.every:
        raise UsageError(f"--eval-every {eval_every} is not a multiple of checkpoint.every={config.checkpoint.every}",
                         "evaluations read saved checkpoints: pick a multiple, or --set checkpoint.every=N")
    return list(range(eval_every, config.steps + 1, eval_every))
