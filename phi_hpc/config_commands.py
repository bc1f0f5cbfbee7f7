"""What a login node sets up: ``phi-hpc configs list|copy`` (the configs and sbatch templates phi-hpc
ships) and ``phi-hpc fetch tokenizer|mbpp`` (the downloads jobs need, cached before anything is queued).

A pip-installed phi-hpc keeps them inside the package (:mod:`phi_hpc.resources`); they are used by
name (``model: phi-1``, ``--profile a100x8``, ``submit pretrain tiny-pretrain``). To change one, copy
it out and pass the copy's path. Torch-free, for login nodes.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group("configs")
def configs_group():
    """List or copy out the shipped configs (run configs, model presets, cluster profiles) and sbatch templates."""


@configs_group.command("list")
@click.option("--paths", is_flag=True, help="Also show where each file is.")
def list_command(paths):
    """Every shipped file, by the name `configs copy` takes."""
    from phi_hpc.resources import _source_of, list_packaged

    for name in list_packaged():
        click.echo(f"{name}\t{_source_of(name)}" if paths else name)


@configs_group.command("copy")
@click.argument("names", nargs=-1)
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to copy into (files keep their configs/... or templates/... layout).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def copy_command(names, dest, force):
    """Copy NAMES (default: everything) out to edit, e.g. `phi-hpc configs copy pretrain model/phi-1`."""
    from phi_hpc.resources import copy_packaged

    for path in copy_packaged(list(names), Path(dest), force):
        click.echo(str(path))


@click.group("fetch")
def fetch_group():
    """Download into the caches what offline compute nodes will read (`submit` does this by itself)."""


@fetch_group.command("tokenizer")
@click.argument("spec", default="microsoft/phi-1")
def fetch_tokenizer_command(spec):
    """Cache SPEC's tokenizer.json (a hub id such as microsoft/phi-1, default) and print its local path."""
    from phi_hpc.fetch import resolve_tokenizer

    click.echo(str(resolve_tokenizer(spec)))


@fetch_group.command("mbpp")
def fetch_mbpp_command():
    """Cache MBPP (mbpp.jsonl and sanitized-mbpp.json, sha256-checked) and print their paths."""
    from phi_hpc.eval.tasks import MBPP_SOURCES, fetch_mbpp

    for filename in MBPP_SOURCES:
        click.echo(str(fetch_mbpp(filename)))


COMMANDS = [configs_group, fetch_group]
