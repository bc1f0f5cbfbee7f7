"""`eval curve`: table + PNG from evaluation folders and metrics.jsonl (synthetic run folders)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.eval.curve import collect_curve, read_val_losses, write_curve
from phi_hpc.run_layout import RunLayout


def _results(step: int | None, **pass_at_1: float) -> dict:
    return {"model": {"step": step}, "tasks": {t: {"pass@1": v, "status_counts": {}} for t, v in pass_at_1.items()}}


def _make_run(tmp_path, evals: dict[int, dict | None], val: dict[int, float], torn_tail: bool = False):
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for step in range(1, 31):
        lines.append(json.dumps({"step": step, "loss": 10.0 - step * 0.1, "lr": 1e-3}))
        if step in val:
            lines.append(json.dumps({"step": step, "val_loss": val[step]}))
    text = "\n".join(lines) + "\n"
    if torn_tail:
        text += '{"step": 31, "lo'  # the trainer is mid-append
    (run / "metrics.jsonl").write_text(text)
    for step, results in evals.items():
        folder = RunLayout(run).eval_dir(step)
        folder.mkdir(parents=True)
        if results is not None:
            (folder / "results.json").write_text(json.dumps(results))
    return run


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_curve_collects_steps_in_order_with_matching_val_loss(tmp_path):
    run = _make_run(
        tmp_path,
        {20: _results(20, humaneval=0.25, mbpp=0.1), 10: _results(10, humaneval=0.125), 30: None},
        val={5: 4.0, 10: 3.5, 15: 3.0, 20: 2.5, 25: 2.25},
        torn_tail=True,
    )
    (run / "eval" / "checkpoints" / "10").mkdir(parents=True)  # model copies kept for eval jobs
    (run / "eval" / ".partial-20").mkdir()
    curve = collect_curve(run)
    assert [p.step for p in curve.points] == [10, 20, 30]
    assert curve.tasks == ["humaneval", "mbpp"]
    first, second, pending = curve.points
    assert first.pass_at_1 == {"humaneval": 0.125} and first.val_loss == 3.5 and first.val_loss_step == 10
    assert second.pass_at_1 == {"humaneval": 0.25, "mbpp": 0.1} and second.val_loss == 2.5
    # step 30 has no results.json yet: pending, paired with the last validation before it
    assert pending.pending and pending.pass_at_1 == {} and pending.val_loss_step == 25
    assert curve.val_losses == [(5, 4.0), (10, 3.5), (15, 3.0), (20, 2.5), (25, 2.25)]


def test_curve_writes_png_and_json(tmp_path):
    run = _make_run(
        tmp_path, {10: _results(10, humaneval=0.0), 20: _results(20, humaneval=0.5)}, val={10: 3.0, 20: 2.0}
    )
    curve, written = write_curve(run)
    png = run / "eval" / "curve.png"
    assert written["png"] == str(png)
    width, height = _png_size(png)
    assert width > 300 and height > 300
    table = json.loads((run / "eval" / "curve.json").read_text())
    assert [(p["step"], p["pass_at_1"]["humaneval"], p["val_loss"]) for p in table["points"]] == [
        (10, 0.0, 3.0),
        (20, 0.5, 2.0),
    ]


def test_step_comes_from_results_when_folder_name_has_none(tmp_path):
    run = _make_run(tmp_path, {}, val={})
    folder = run / "eval" / "latest"  # what `submit eval --checkpoint RUN/checkpoints/latest` writes
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(_results(42, humaneval=1.0)))
    assert [p.step for p in collect_curve(run).points] == [42]
    # the same checkpoint evaluated again as step-42 (pending, then finished): still one point
    RunLayout(run).eval_dir(42).mkdir()
    assert [(p.step, p.eval_dir) for p in collect_curve(run).points] == [(42, str(folder))]
    os.utime(folder / "results.json", (1, 1))
    (RunLayout(run).eval_dir(42) / "results.json").write_text(json.dumps(_results(42, humaneval=0.5)))
    assert [(p.step, p.pass_at_1) for p in collect_curve(run).points] == [(42, {"humaneval": 0.5})]


def test_curve_cli_prints_table(run_cli, tmp_path):
    run = _make_run(tmp_path, {10: _results(10, humaneval=0.5)}, val={10: 3.25})
    proc = run_cli("eval", "curve", str(run), "-o", str(tmp_path / "plots" / "c.png"), check=True)
    assert "50.00%" in proc.stdout and "3.2500" in proc.stdout
    assert _png_size(tmp_path / "plots" / "c.png")[0] > 300
    assert (tmp_path / "plots" / "c.json").is_file()


def test_errors_are_one_line(run_cli, tmp_path):
    proc = run_cli("eval", "curve", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("eval", "curve", str(tmp_path / "empty"))
    assert proc.returncode == 1 and "--eval-every" in proc.stderr and proc.stderr.count("\n") == 1


def test_damaged_inputs_name_the_file(tmp_path):
    run = _make_run(tmp_path, {10: None}, val={})
    (RunLayout(run).eval_dir(10) / "results.json").write_text("{not json")
    with pytest.raises(PhiError, match=r"step-10/results.json:1"):
        collect_curve(run)
    metrics = tmp_path / "m.jsonl"
    metrics.write_text('{"step": 1, "val_loss": 2.0}\ngarbage\n{"step": 2, "val_loss": 1.0}\n')
    with pytest.raises(PhiError, match=r"m.jsonl:2"):
        read_val_losses(metrics)
    with pytest.raises(UsageError):
        collect_curve(tmp_path / "nope")
