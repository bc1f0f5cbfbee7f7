"""``phi-hpc train CONFIG``: the command every training job runs, on every rank.

Works the same by hand (one process), under ``torchrun`` and inside ``srun`` tasks (see
:mod:`phi_hpc.train.distributed`). Exit codes: 0 done, 75 preempted (a checkpoint was saved; run the
same command again to resume), 2 bad config, 1 failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click


@click.command("train")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set steps=100 --set data.paths=[data/out] (repeatable).",
)
@click.pass_context
def train_command(ctx: click.Context, config_file: str, overrides: tuple[str, ...]) -> None:
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

    # A caller running this command in-process (a submitted job's task, phi_hpc.launch.task) may pass
    # the trainer its checkpoint-publication callback as the context object: phi_hpc.cli.main(argv, obj=...).
    on_publish = ctx.obj if callable(ctx.obj) else None
    result = train(load_train_config(config_file, overrides), on_publish=on_publish)
    if os.environ.get("RANK", "0") == "0":
        from phi_hpc.run_layout import RunLayout

        _print_summary(RunLayout(result.run_dir).summary)
    code = main_exit_code(result)
    if code:
        sys.exit(code)


def _print_summary(path: Path) -> None:
    """The run's summary.json as a table on stderr (stdout keeps the per-step lines)."""
    from rich.table import Table

    from phi_hpc.progress import stderr_console

    summary = json.loads(path.read_text(encoding="utf-8"))
    table = Table(title=f"train: {summary['status']}", show_header=False)
    rows = [
        ("run", str(path.parent)),
        ("step", f"{summary['step']} / {summary['steps']}"),
        ("last loss", summary["last_loss"]),
        ("last validation loss", summary["last_val_loss"]),
        ("tokens/s (mean)", summary["tokens_per_s"]),
        ("last checkpoint", summary["last_checkpoint"]),
        ("resumed from", summary["resumed_from"]),
        ("processes", f"{summary['world_size']} ({summary['launcher']}, {summary['device']})"),
    ]
    for name, value in rows:
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) and "loss" in name else str(value)
        table.add_row(name, shown)
    stderr_console.print(table)


COMMANDS = [train_command]
