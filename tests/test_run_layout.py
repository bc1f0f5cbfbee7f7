"""The run folder's one layout: checkpoint resolution, the run's tokenizer, and the metrics reader's rule."""

from __future__ import annotations

import json
import os

import pytest

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.run_layout import RunLayout, eval_label, find_checkpoint, model_checkpoint, step_of_name
from phi_hpc.train.metrics import MetricsWriter, read_metrics


def _step(run, step, hf=False):
    folder = RunLayout(run).step_dir(step) / ("hf" if hf else "")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_every_way_of_naming_a_checkpoint_reaches_the_step_and_its_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 1\n")
    _step(run, 10)
    model = _step(run, 20, hf=True)
    (run / "checkpoints" / "latest").write_text("20\n")
    for given in (run, run / "checkpoints", run / "checkpoints" / "latest", run / "checkpoints" / "20", model):
        found = model_checkpoint(given)
        assert (found.folder, found.step, found.run.root) == (model, 20, run), given
    snapshot = RunLayout(run).snapshot_dir(10)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    found = model_checkpoint(snapshot)
    assert (found.folder, found.step, found.run.root) == (snapshot, 10, run)
    assert find_checkpoint(tmp_path / "nothing").is_model is False
    with pytest.raises(UsageError, match="does not exist"):
        model_checkpoint(tmp_path / "nothing")
    (run / "checkpoints" / "latest").write_text("")
    with pytest.raises(PhiError, match="is empty"):
        find_checkpoint(run)


def test_names_of_steps_and_their_eval_folders():
    assert [step_of_name(n) for n in ("20", "step-20", "step_20", "step20", "global_step20", "latest")] == [
        20,
        20,
        20,
        20,
        20,
        None,
    ]
    assert eval_label("20") == "step-20" and eval_label("latest") == "latest"
    assert RunLayout("r").eval_dir(20).as_posix() == "r/eval/step-20"


def test_the_tokenizer_of_a_run_trained_from_another_folder(tmp_path, monkeypatch):
    """Relative data.paths (a .bin/.idx prefix inside a prepare folder) resolve from where training started."""
    start = tmp_path / "project"
    (start / "data" / "out").mkdir(parents=True)
    (start / "data" / "out" / "tok.json").write_text("{}")
    (start / "data" / "out" / "manifest.json").write_text(json.dumps({"tokenizer": {"path": "tok.json"}}))
    run = start / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("run_dir: runs/a\ndata:\n  paths:\n  - data/out/train\n")
    monkeypatch.chdir(tmp_path)
    assert RunLayout(run).tokenizer() == start / "data" / "out" / "tok.json"
    finetune = tmp_path / "ft"
    finetune.mkdir()
    (finetune / "config.yaml").write_text(
        f"data:\n  format: jsonl\n  tokenizer: {start / 'data/out/tok.json'}\n  paths: [x.jsonl]\n"
    )
    assert RunLayout(finetune).tokenizer() == start / "data" / "out" / "tok.json"
    (finetune / "tokenizer.json").write_text("{}")
    assert RunLayout(finetune).tokenizer() == finetune / "tokenizer.json"
    assert RunLayout(tmp_path / "none").tokenizer() is None


def test_one_rule_for_a_bad_metrics_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 101)]
    path.write_text("\n".join(lines) + '\n{"step": 101, "lo')  # a job killed mid-write
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 101))
    assert [r["step"] for r in read_metrics(path, last=3)] == [99, 100]  # the torn line was one of the 3
    writer = MetricsWriter(path, enabled=True)
    writer.truncate_after(50)
    assert path.read_text().endswith("\n") and [r["step"] for r in read_metrics(path)] == list(range(1, 51))
    path.write_text(lines[0] + "\ngarbage\n" + lines[1] + "\n")
    for last in (None, 2):
        with pytest.raises(PhiError, match=r"metrics.jsonl:2"):
            read_metrics(path, last=last)
    assert read_metrics(tmp_path / "missing.jsonl") == [] and read_metrics(os.devnull) == []
