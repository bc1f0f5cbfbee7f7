"""Where every file of a ``prepare`` run lives, in one place.

``OUT/`` holds what users keep: ``train.{bin,idx}``, ``validation.{bin,idx}``, ``manifest.json``,
``audit.jsonl`` (every removed document and why), ``bad_inputs.jsonl`` (every unreadable input with
file:line) and ``summary.json`` (timings of the last run). ``OUT/.work/RUN_ID/`` holds the
resumable intermediate state (per-shard tokens and signatures, the reduce result) of one
fingerprint (config + tokenizer + inputs). Keying it by fingerprint means a changed config never
reuses stale work, and concurrent Slurm array tasks never delete each other's files. ``OUT/.work``
is deleted after a successful run unless ``keep_work`` is set.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    out: Path
    run_id: str  # the run's fingerprint (a prefix of it)

    @property
    def all_work(self) -> Path:
        return self.out / ".work"

    @property
    def work(self) -> Path:
        return self.all_work / self.run_id

    @property
    def plan(self) -> Path:
        return self.work / "plan.json"

    def shard_prefix(self, index: int) -> Path:
        return self.work / "map" / f"shard-{index:05d}"

    def shard_arrays(self, index: int) -> Path:
        return Path(f"{self.shard_prefix(index)}.npz")

    def shard_signatures(self, index: int) -> Path:
        return Path(f"{self.shard_prefix(index)}.sig.npy")

    def shard_done(self, index: int) -> Path:
        """Written last by the map stage: its presence means the shard's three files are complete."""
        return Path(f"{self.shard_prefix(index)}.json")

    @property
    def reduce_arrays(self) -> Path:
        return self.work / "reduce.npz"

    @property
    def reduce_done(self) -> Path:
        return self.work / "reduce.json"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    @property
    def audit(self) -> Path:
        return self.out / "audit.jsonl"

    @property
    def bad_inputs(self) -> Path:
        return self.out / "bad_inputs.jsonl"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    def output_prefix(self, split: str) -> Path:
        return self.out / split


def remove_stale_temporaries(folder: Path, stem: str) -> None:
    """Delete temporary files a killed run left beside ``stem`` (they never carry a final name)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        name = path.name
        by_writer = name.startswith(f"{stem}.") and ".tmp." in name  # IndexedDatasetWriter: P.bin.tmp.PID
        by_atomic_write = name.startswith(f".{stem}") and name.endswith(".tmp")  # fileio: .NAME.XXXX.tmp
        leftover = by_writer or by_atomic_write
        if leftover and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
