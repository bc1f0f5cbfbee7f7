"""The human end of a prepare run: a summary table and the first bad inputs, on stderr."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from phi_hpc.progress import stderr_console

_SHOWN_BAD_INPUTS = 10


def print_summary(manifest: dict, output_dir: str) -> None:
    counts = manifest["counts"]
    table = Table(title="phi-hpc prepare", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("documents in", f"{counts['documents_in']:,}")
    table.add_row("bad inputs (skipped)", f"{counts['bad']:,}")
    for name, dropped in counts.get("filtered", {}).items():
        table.add_row(f"filtered: {name}", f"{dropped:,}")
    for name, flagged in counts.get("flagged", {}).items():
        table.add_row(f"flagged, kept (see audit): {name}", f"{flagged:,}")
    table.add_row("exact duplicates", f"{counts['exact_duplicates']:,}")
    table.add_row("near duplicates", f"{counts['near_duplicates']:,}")
    table.add_row("documents out", f"{counts['documents_out']:,}")
    table.add_row("MB in / out", f"{counts['bytes_in'] / 1e6:,.2f} / {counts['bytes_out'] / 1e6:,.2f}")
    table.add_row("tokens (with EOS)", f"{counts['tokens']:,}")
    for output in manifest["outputs"]:
        table.add_row(
            f"{output['split']}: {output['prefix']}.bin/.idx",
            f"{output['documents']:,} docs, {output['tokens']:,} tokens",
        )
    stderr_console.print(table)
    bad = manifest.get("bad_inputs", {})
    if counts["bad"]:
        stderr_console.print(
            f"[yellow]{counts['bad']} bad inputs skipped[/yellow] "
            f"(all listed in {Path(output_dir) / bad.get('file', 'bad_inputs.jsonl')}):",
            highlight=False,
            soft_wrap=True,
        )
        for entry in bad.get("first", [])[:_SHOWN_BAD_INPUTS]:
            stderr_console.print(
                f"  {entry['where']}: {entry['reason']}", highlight=False, markup=False, soft_wrap=True
            )
    stderr_console.print(f"manifest: {Path(output_dir) / 'manifest.json'}", highlight=False, soft_wrap=True)
