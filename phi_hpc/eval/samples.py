"""The files ``eval score`` and ``eval grade`` share: the samples they read, the summary they write.

Kept apart from the commands so that both command bodies and :mod:`phi_hpc.eval.grade` use one reader
without importing each other. Light: the standard library and :mod:`phi_hpc.fileio` only.
"""

from __future__ import annotations

from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.fileio import iter_jsonl


def read_samples(path: Path) -> list[dict]:
    """A completions file (``task_id`` and ``completion`` per line), checked line by line."""
    samples = []
    for number, sample in iter_jsonl(path, "one JSON object per line with task_id and completion"):
        if not isinstance(sample, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object with task_id and completion")
        samples.append(sample)
    if not samples:
        raise UsageError(f"{path}: no samples", "one JSON object per line with task_id and completion")
    return samples


def summary_path_for(results_path: Path) -> Path:
    """``X.jsonl`` -> ``X.summary.json``, beside it."""
    name = results_path.name
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    return results_path.with_name(stem + ".summary.json")
