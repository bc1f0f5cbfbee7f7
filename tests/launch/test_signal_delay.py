"""The warning when SIGUSR2 would come too late for one more step and a checkpoint save."""

from __future__ import annotations

import json
from pathlib import Path

from phi_hpc.launch.watch import signal_delay_warning


def write_metrics(run_dir: Path, step_s: float, save_s: float, save_at: int = 5, steps: int = 10) -> None:
    now, lines = 1000.0, []
    for step in range(1, steps + 1):
        now += step_s
        lines.append(json.dumps({"step": step, "loss": 1.0, "step_time_s": step_s, "time": now}))
        if step == save_at:
            now += save_s  # the trainer logs a step, then saves its checkpoint
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_a_signal_delay_shorter_than_a_step_plus_a_save_is_warned_about(tmp_path):
    write_metrics(tmp_path, step_s=20, save_s=250)
    warning = signal_delay_warning(tmp_path, 120)
    assert "shorter than one step (20 s) plus one checkpoint save (up to 250 s" in warning
    assert "--signal-delay 406" in warning
    assert signal_delay_warning(tmp_path, 300) == ""


def test_no_warning_without_measurements(tmp_path):
    assert signal_delay_warning(tmp_path, 1) == ""
