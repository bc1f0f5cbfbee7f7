"""Keep the checkpoints that ``--eval-every`` evaluations will read, despite ``keep_last`` pruning.

An eval job may start long after its step was published (it waits in the queue), by which time the
trainer has deleted all but its last few checkpoints. So task 0 of the training job listens to the
trainer's checkpoint publication (``phi_hpc.train.checkpoint.PUBLISH_LISTENERS``, called before
pruning) and, for each step the evaluations want, hard-links the step's model files
(``config.json``, ``model.safetensors``; not the optimizer state) into ``RUN/eval/checkpoints/<step>/``,
plus the data's tokenizer. Hard links cost no space and survive the deletion of the original; across
file systems it falls back to copying. Steps published by an earlier attempt of a requeued job are
picked up by a scan when the watcher starts and when it stops.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import yaml

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")


def snapshot_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "eval" / "checkpoints" / str(step)


def _model_folder(step_dir: Path) -> Path:
    return step_dir / "hf" if (step_dir / "hf" / "config.json").is_file() else step_dir


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def data_tokenizer(run_dir: Path) -> Path | None:
    """tokenizer.json of the run's training data (``prepare`` records it in manifest.json)."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        for folder in config.get("data", {}).get("paths", []):
            manifest = Path(folder) / "manifest.json"
            if manifest.is_file():
                path = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer", {}).get("path")
                if path and Path(path).is_file():
                    return Path(path)
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return None


def take_snapshot(run_dir: Path, step: int) -> bool:
    """Link step ``step``'s model into RUN/eval/checkpoints/<step>; False if that step is not saved."""
    step_dir = run_dir / "checkpoints" / str(step)
    target = snapshot_dir(run_dir, step)
    if (target / "config.json").is_file():
        return True
    source = _model_folder(step_dir)
    if not (source / "config.json").is_file():
        return False
    partial = target.with_name(f".partial-{step}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            _link_or_copy(source / name, partial / name)
    tokenizer = data_tokenizer(run_dir)
    if tokenizer is not None:
        shutil.copy2(tokenizer, partial / "tokenizer.json")
    os.replace(partial, target)  # complete or absent, like the trainer's own checkpoints
    return True


class SnapshotWatcher:
    """Snapshots the wanted steps as the trainer publishes them (in the trainer's own process).

    ``on_snapshot(step)`` runs once a step's snapshot exists (``--eval-every`` submits its eval job
    there, :mod:`phi_hpc.launch.evals`); also for steps an earlier attempt already snapshotted.
    """

    def __init__(self, run_dir: Path, steps: list[int], on_snapshot: Callable[[int], None] | None = None):
        self.run_dir, self.pending = Path(run_dir), sorted(steps)
        self.on_snapshot = on_snapshot or (lambda step: None)

    def __enter__(self) -> "SnapshotWatcher":
        from phi_hpc.train.checkpoint import PUBLISH_LISTENERS

        self.scan()  # steps an earlier attempt of a requeued job already published
        PUBLISH_LISTENERS.append(self._published)
        return self

    def __exit__(self, *exc) -> None:
        from phi_hpc.train.checkpoint import PUBLISH_LISTENERS

        PUBLISH_LISTENERS.remove(self._published)
        self.scan()

    def scan(self) -> None:
        for step in list(self.pending):
            if take_snapshot(self.run_dir, step):
                self._taken(step)

    def _taken(self, step: int) -> None:
        self.pending.remove(step)
        self.on_snapshot(step)

    def _published(self, step: int, step_dir: Path) -> None:
        if step not in self.pending:
            return
        try:
            if take_snapshot(self.run_dir, step):
                self._taken(step)
        except OSError as exc:  # a failed copy must not stop training: report it; the eval job will say so
            print(f"[phi-hpc] snapshot of step {step} failed: {exc}", flush=True)
