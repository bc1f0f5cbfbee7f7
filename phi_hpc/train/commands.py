"""``phi-hpc train CONFIG``: the command every training job runs, on every rank.

Works the same by hand (one process), under ``torchrun`` and inside ``srun`` tasks (see
:mod:`phi_hpc.train.distributed`). Exit codes: 0 done, 75 preempted (a checkpoint was saved; run the
same command again to resume), 2 bad config, 1 failure.
"""

from __future__ import annotations

import sys

import click


@click.command("train")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set steps=100 --set data.paths=[data/out] (repeatable).")
def train_command(config_file: str, overrides: tuple[str, ...]) -> None:
    """Pretrain or finetune with DeepSpeed from a YAML config (resumes from RUN/checkpoints/latest).

    \b
    Examples:
      phi-hpc train configs/tiny-pretrain.yaml --set data.paths=[data/out]
      python -m torch.distributed.run --nproc_per_node 8 -m phi_hpc train configs/pretrain.yaml
      srun phi-hpc train configs/pretrain.yaml          # ranks from SLURM_* variables

    Writes RUN/config.yaml, RUN/metrics.jsonl (one JSON line per step), RUN/checkpoints/<step>/ and
    RUN/summary.json. SIGUSR2 or SIGTERM: checkpoint at the next step, exit 75 (requeue me).
    """
    from phi_hpc.train.config import load_train_config
    from phi_hpc.train.trainer import main_exit_code, train

    result = train(load_train_config(config_file, overrides))
    code = main_exit_code(result)
    if code:
        sys.exit(code)


COMMANDS = [train_command]
