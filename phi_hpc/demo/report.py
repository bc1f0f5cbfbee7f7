"""What ``phi-hpc demo`` reports: ``OUT/demo.json`` when it stops early, and the summary it prints.

Kept apart from the stages so that the newcomer-facing words (the table, the note on why a tiny model
scores about 0%) and the shape of a failed demo.json each live in one place.
"""

from __future__ import annotations

import time
from pathlib import Path

from phi_hpc.errors import PhiError


class DemoProgress:
    """What has been done so far, so that a failed demo still leaves a demo.json saying where it stopped."""

    def __init__(self, out: Path, tokenizer: Path | None):
        self.out, self.tokenizer = out, tokenizer
        self.stage = "start"
        self.seconds: dict[str, float] = {}
        self.started = time.time()

    def outputs(self) -> dict:
        out = self.out
        return {
            "data": str(out / "data"),
            "manifest": str(out / "data" / "manifest.json"),
            "run": str(out / "run"),
            "eval": str(out / "eval"),
            "results": str(out / "eval" / "results.json"),
            "logs": str(out / "logs"),
        }

    def failed(self, exc: PhiError) -> dict:
        return {
            "status": "failed",
            "failed_stage": self.stage,
            "error": exc.one_line(),
            "outputs": self.outputs(),
            "tokenizer": str(self.tokenizer),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def print_summary(console, summary: dict, out: Path) -> None:
    """The table and the plain words a newcomer reads at the end: what each stage made, and why a
    pass@1 near 0% beside all reference solutions passing is the expected, working result."""
    from rich.table import Table

    table = Table(title="phi-hpc demo", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    p, t, h = summary["prepare"], summary["pretrain"], summary["humaneval"]
    table.add_row("tokenizer", f"{summary['tokenizer_source']}: {summary['tokenizer']}")
    table.add_row(
        "prepare",
        f"{p['documents_out']} of {p['documents_in']} stdlib files, {p['tokens']:,} tokens "
        f"-> {summary['outputs']['data']}",
    )
    loss = f"loss {t['first_loss']:.3f} -> {t['last_loss']:.3f}" if t["first_loss"] is not None else "no loss lines"
    table.add_row(
        "pretrain", f"tiny config, {t['steps']} steps via {t['executor']}: {loss} -> {summary['outputs']['run']}"
    )
    table.add_row(
        "tiny model",
        f"HumanEval pass@1 {100 * h['model_pass@1']:.1f}% on {h['problems']} problems "
        f"({_counts(h['model_status_counts'])})",
    )
    table.add_row("references", f"{h['reference_passed']}/{h['reference_total']} passed in the same sandbox")
    table.add_row("results", summary["outputs"]["results"])
    table.add_row("summary", str(out / "demo.json"))
    table.add_row("time", f"{summary['seconds']['total']:.0f} s")
    console.print(table)
    console.print(
        f"A {t['steps']}-step model with a few million parameters cannot write working code, so a pass@1 near 0% is "
        f"the expected result. The {h['reference_passed']}/{h['reference_total']} reference solutions passing "
        f"through the same sandbox show the harness counts correct code as correct. For real numbers, "
        f"evaluate a trained checkpoint: phi-hpc eval run --hf-model PHI1_DIR --task humaneval,mbpp -o OUT"
    )


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no samples"
