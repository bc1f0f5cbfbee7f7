"""--eval-every snapshots: a checkpoint pruned right after it is published is still kept for its eval."""

from __future__ import annotations

import shutil

from phi_hpc.launch.snapshots import SnapshotWatcher, snapshot_dir
from phi_hpc.train.checkpoint import PUBLISH_LISTENERS


def _publish(run_dir, step):
    step_dir = run_dir / "checkpoints" / str(step)
    step_dir.mkdir(parents=True)
    (step_dir / "config.json").write_text('{"step": %d}' % step)
    (step_dir / "model.safetensors").write_bytes(b"weights-%d" % step)
    for listener in list(PUBLISH_LISTENERS):  # what CheckpointManager.save does before pruning
        listener(step, step_dir)
    return step_dir


def test_a_step_pruned_at_once_is_still_snapshotted(tmp_path):
    with SnapshotWatcher(tmp_path, [10, 20]):
        for step in (5, 10, 15, 20):
            shutil.rmtree(_publish(tmp_path, step))  # keep_last=0-like pruning, no time for any poll
    assert not PUBLISH_LISTENERS  # unregistered on exit
    for step in (10, 20):
        assert (snapshot_dir(tmp_path, step) / "model.safetensors").read_bytes() == b"weights-%d" % step
    assert not snapshot_dir(tmp_path, 5).exists() and not snapshot_dir(tmp_path, 15).exists()


def test_steps_published_by_an_earlier_attempt_are_picked_up_on_start(tmp_path):
    _publish(tmp_path, 10)  # before the (requeued) job's watcher existed
    with SnapshotWatcher(tmp_path, [10]) as watcher:
        assert watcher.pending == []
    assert (snapshot_dir(tmp_path, 10) / "config.json").is_file()
