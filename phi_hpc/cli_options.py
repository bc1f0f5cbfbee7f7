"""Options shared by every command that has a config, so they read the same everywhere."""

from __future__ import annotations

from typing import Callable

import click


def config_options(func: Callable) -> Callable:
    """Add ``--config FILE`` and repeatable ``--set key=value`` (see :mod:`phi_hpc.config`)."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable).")(func)
    func = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="YAML config file (defaults are used for keys it leaves out).")(func)
    return func
