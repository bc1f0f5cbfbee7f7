"""Progress bars and summary tables, drawn the same way by every long-running command.

Bars go to stderr so stdout stays parseable, and they degrade to nothing when stderr is not a
terminal (Slurm log files would otherwise fill with carriage-return noise).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)


def progress_bar(transient: bool = False, disable: bool | None = None) -> Progress:
    """A rich progress bar with the columns users expect: count, percent, elapsed, remaining."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=transient,
        disable=disable,
    )
