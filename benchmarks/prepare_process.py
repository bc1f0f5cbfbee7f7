"""A fresh ``phi-hpc prepare`` process, timed: shared by ``benchmarks/prepare.py`` and
``benchmarks/quality.py``, which measure the same end-to-end run against different peers."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process, all threads (``RUSAGE_SELF``), or of its children
    that have been waited for (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def prepare_arguments(inputs: list[Path], tokenizer: Path, out: Path, workers: int, *extra: str) -> list[str]:
    """``prepare INPUT... --tokenizer T -o OUT --workers N EXTRA...``, the words after the program."""
    return [
        "prepare",
        *map(str, inputs),
        "--tokenizer",
        str(tokenizer),
        "-o",
        str(out),
        "--workers",
        str(workers),
        *extra,
    ]


def run_timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run ``command`` to the end: its wall seconds, the CPU seconds of it and its children, its stdout.
    A failure ends the benchmark with the tail of its stderr."""
    cpu, start = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - start, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    return wall, cpu, proc.stdout


def run_prepare(
    inputs: list[Path], tokenizer: Path, out: Path, workers: int, *extra: str, env: dict
) -> tuple[float, float, dict]:
    """``phi-hpc prepare`` into a fresh ``out``: wall seconds, CPU seconds and the manifest it wrote."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "phi_hpc", *prepare_arguments(inputs, tokenizer, out, workers, *extra)]
    wall, cpu, _ = run_timed(command, env)
    return wall, cpu, json.loads((Path(out) / "manifest.json").read_text())
