"""--eval-every snapshots: a checkpoint pruned right after it is published is still kept for its eval."""

from __future__ import annotations

import shutil
from pathlib import Path

from phi_hpc.launch.snapshots import SnapshotWatcher
from phi_hpc.run_layout import RunLayout


def snapshot_dir(run_dir, step):
    return RunLayout(run_dir).snapshot_dir(step)


def _publish(run_dir, step, on_publish=None):
    step_dir = run_dir / "checkpoints" / str(step)
    step_dir.mkdir(parents=True)
    (step_dir / "config.json").write_text(f'{{"step": {step}}}')
    (step_dir / "model.safetensors").write_bytes(b"weights-%d" % step)
    if on_publish is not None:  # what CheckpointManager.save does before pruning
        on_publish(step, step_dir)
    return step_dir


def test_a_step_pruned_at_once_is_still_snapshotted(tmp_path):
    with SnapshotWatcher(tmp_path, [10, 20]) as watcher:
        for step in (5, 10, 15, 20):
            shutil.rmtree(_publish(tmp_path, step, watcher.published))  # keep_last=0-like pruning, no poll
    for step in (10, 20):
        assert (snapshot_dir(tmp_path, step) / "model.safetensors").read_bytes() == b"weights-%d" % step
    assert not snapshot_dir(tmp_path, 5).exists() and not snapshot_dir(tmp_path, 15).exists()


def test_steps_published_by_an_earlier_attempt_are_picked_up_on_start(tmp_path):
    _publish(tmp_path, 10)  # before the (requeued) job's watcher existed
    with SnapshotWatcher(tmp_path, [10]) as watcher:
        assert watcher.pending == []
    assert (snapshot_dir(tmp_path, 10) / "config.json").is_file()


def test_the_checkpoint_manager_calls_its_publication_callback_before_pruning(tmp_path):
    """The trainer's side of the contract: ``on_publish`` sees each step folder complete, before pruning."""
    from phi_hpc.train.checkpoint import CheckpointManager

    seen = []

    class Engine:  # what CheckpointManager.save asks of a DeepSpeed engine
        module = None

        def save_checkpoint(self, path, tag, save_latest):
            (Path(path) / tag).mkdir(parents=True)

    manager = CheckpointManager(
        tmp_path / "checkpoints",
        keep_last=1,
        rank=0,
        world_size=1,
        barrier=lambda: None,
        on_publish=lambda step, folder: seen.append((step, folder.is_dir())),
    )
    for step in (1, 2):
        manager.save(step, Engine(), {}, save_model=False)
    assert seen == [(1, True), (2, True)] and manager.complete_steps() == [2]
