"""The ``phi-hpc`` command line: a click group whose commands live beside the code they drive.

Each area (data, train, launch, eval, quality) keeps its commands in its own ``commands.py`` and
exposes them as ``COMMANDS``. Those modules import only click and the standard library at the top;
torch, deepspeed, tokenizers and friends are imported inside the command bodies, so ``--help``,
``status``, ``logs`` and ``cancel`` stay instant on a login node (a test checks this).

Errors: a :class:`~phi_hpc.errors.PhiError` becomes one line on stderr and its exit code; ``--debug``
(or ``PHI_HPC_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from phi_hpc import __version__
from phi_hpc.errors import PhiError

# Modules that contribute commands, in the order of the chain (prepare -> train -> submit -> eval).
COMMAND_MODULES = (
    "phi_hpc.data.commands",
    "phi_hpc.quality.commands",
    "phi_hpc.model.commands",
    "phi_hpc.train.commands",
    "phi_hpc.launch.commands",
    "phi_hpc.eval.commands",
    "phi_hpc.demo",
    "phi_hpc.config_commands",
)


class ChainOrderGroup(click.Group):
    """Lists commands in the order they were added (the order of the chain), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=ChainOrderGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="phi-hpc")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Reproduce phi-1 on a Slurm cluster: prepare data, pretrain/finetune with DeepSpeed, evaluate.

    \b
    Typical chain:
      phi-hpc prepare /data/code/*.jsonl.zst --tokenizer tok.json -o data/
      phi-hpc submit pretrain configs/pretrain.yaml --nodes 4 --eval-every 1000
      phi-hpc status            # cheap: safe on a login node
      phi-hpc eval run --checkpoint runs/x/checkpoints/latest --task humaneval,mbpp -o eval/

    Every command takes --config FILE and --set key=value where it has a config.
    """
    if debug:
        os.environ["PHI_HPC_DEBUG"] = "1"


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        for command in importlib.import_module(module_name).COMMANDS:
            cli.add_command(command)


_register_commands()


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("PHI_HPC_DEBUG") == "1"


def main(argv: list[str] | None = None, obj=None) -> None:
    """Console entry point: run the CLI and turn user-facing errors into one line + exit code.

    ``obj`` becomes the click context object: how an in-process caller hands a command a callback
    (``train``'s checkpoint-publication callback, :mod:`phi_hpc.launch.task`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="phi-hpc", standalone_mode=False, obj=obj)
    except PhiError as exc:
        if _debug_requested(argv):
            raise
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        if _debug_requested(argv):
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"error:{where} {exc.strerror or exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)
