"""What every quality command reads and writes: documents streamed as ``prepare`` reads them, and the
run's JSON summary plus a short table on stderr.

Shared by :mod:`phi_hpc.quality.commands`, :mod:`phi_hpc.quality.decontaminate_commands` and
:mod:`phi_hpc.quality.synth_commands`, so every command reads inputs and reports the same way. Only the
standard library at import time (``--help`` stays torch-free); rich and the readers load on use.
"""

from __future__ import annotations

import json


def iter_inputs(inputs: tuple[str, ...], glob: str, text_key: str, bad: list):
    """(text, origin) of every document of the inputs, streamed and read like ``prepare`` reads them;
    unreadable inputs are appended to ``bad``."""
    from phi_hpc.data.sources import expand_inputs, read_documents

    for source in expand_inputs(list(inputs), glob):
        for doc in read_documents(source, text_key, bad.append):
            yield doc.text, doc.origin


def summarize(title: str, summary: dict, summary_path: str, keys: list[str]) -> None:
    from rich.table import Table

    from phi_hpc.fileio import write_json
    from phi_hpc.progress import stderr_console

    write_json(summary_path, summary)
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for key in keys:
        value = summary.get(key)
        table.add_row(key.replace("_", " "), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    table.add_row("summary", summary_path)
    stderr_console.print(table)
