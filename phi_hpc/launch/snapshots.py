"""Keep the checkpoints that ``--eval-every`` evaluations will read, despite ``keep_last`` pruning.

An eval job may start long after its step was published (it waits in the queue), by which time the
trainer has deleted all but its last few checkpoints. So task 0 of the training job passes the
trainer a publication callback (:meth:`SnapshotWatcher.published`, called by
:class:`phi_hpc.train.checkpoint.CheckpointManager` before pruning) and, for each step the evaluations
want, hard-links the step's model files (``config.json``, ``model.safetensors``; not the optimizer
state) into ``RUN/eval/checkpoints/<step>/`` (:meth:`phi_hpc.run_layout.RunLayout.snapshot_dir`), plus
the run's tokenizer. Hard links cost no space and survive the deletion of the original; across file
systems it falls back to copying. Steps published by an earlier attempt of a requeued job are picked
up by a scan when the watcher starts and when it stops.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from phi_hpc.run_layout import MODEL_CONFIG, PARTIAL_PREFIX, TOKENIZER_FILE, RunLayout, find_checkpoint

MODEL_FILES = (MODEL_CONFIG, "model.safetensors", "generation_config.json")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def take_snapshot(run_dir: Path, step: int) -> bool:
    """Link step ``step``'s model into RUN/eval/checkpoints/<step>; False if that step is not saved."""
    layout = RunLayout(run_dir)
    target = layout.snapshot_dir(step)
    if (target / MODEL_CONFIG).is_file():
        return True
    source = find_checkpoint(layout.step_dir(step))
    if not source.is_model:
        return False
    partial = target.with_name(f"{PARTIAL_PREFIX}{step}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source.folder / name).is_file():
            _link_or_copy(source.folder / name, partial / name)
    tokenizer = layout.tokenizer()
    if tokenizer is not None:
        shutil.copy2(tokenizer, partial / TOKENIZER_FILE)
    os.replace(partial, target)  # complete or absent, like the trainer's own checkpoints
    return True


class SnapshotWatcher:
    """Snapshots the wanted steps as the trainer publishes them (in the trainer's own process).

    Use as a context manager and hand :meth:`published` to the trainer as its ``on_publish``.
    ``on_snapshot(step)`` runs once a step's snapshot exists (``--eval-every`` submits its eval job
    there, :mod:`phi_hpc.launch.evals`); also for steps an earlier attempt already snapshotted.
    """

    def __init__(self, run_dir: Path, steps: list[int], on_snapshot: Callable[[int], None] | None = None):
        self.run_dir, self.pending = Path(run_dir), sorted(steps)
        self.on_snapshot = on_snapshot or (lambda step: None)

    def __enter__(self) -> SnapshotWatcher:
        self.scan()  # steps an earlier attempt of a requeued job already published
        return self

    def __exit__(self, *exc) -> None:
        self.scan()

    def scan(self) -> None:
        for step in list(self.pending):
            if take_snapshot(self.run_dir, step):
                self._taken(step)

    def _taken(self, step: int) -> None:
        self.pending.remove(step)
        self.on_snapshot(step)

    def published(self, step: int, step_dir: Path) -> None:
        """The trainer's ``on_publish``: snapshot ``step`` now if it is wanted, before it can be pruned."""
        if step not in self.pending:
            return
        try:
            if take_snapshot(self.run_dir, step):
                self._taken(step)
        except OSError as exc:  # a failed copy must not stop training: report it; the eval job will say so
            print(f"[phi-hpc] snapshot of step {step} failed: {exc}", flush=True)
