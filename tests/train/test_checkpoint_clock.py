"""Time-based checkpoints (issue 11, point 10): decided by an injected clock, never by sleeping."""

from __future__ import annotations

import pytest

from phi_hpc.config import load_config
from phi_hpc.errors import UsageError
from phi_hpc.train.checkpoint import SaveClock
from phi_hpc.train.config import TrainConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_save_is_due_every_n_minutes_after_the_last_one():
    clock = FakeClock()
    saves = SaveClock(every_minutes=30, clock=clock)
    assert not saves.due()
    clock.now += 29 * 60
    assert not saves.due()
    clock.now += 60
    assert saves.due()
    saves.saved()
    assert not saves.due()
    clock.now += 10 * 60
    saves.saved()  # a step-based save in between restarts the interval
    clock.now += 25 * 60
    assert not saves.due()
    clock.now += 5 * 60
    assert saves.due()


def test_zero_minutes_means_off():
    clock = FakeClock()
    saves = SaveClock(every_minutes=0, clock=clock)
    clock.now += 10**9
    assert not saves.due()


def test_every_minutes_is_a_config_key(tmp_path):
    cfg = load_config(TrainConfig, None, ["checkpoint.every_minutes=2.5"])
    assert cfg.checkpoint.every_minutes == 2.5
    with pytest.raises(UsageError, match="every_minutes"):
        load_config(TrainConfig, None, ["checkpoint.every_minutes=-1"])
