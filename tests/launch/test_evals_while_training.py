"""Evaluations while training (issue 15): each --eval-every checkpoint is scored as soon as it is published,
even when training later fails, on the real local Slurm."""

from __future__ import annotations

import json

import pytest

from tests.launch.conftest import (  # noqa: F401
    attempts,
    debug_logs,
    phi,
    slurm_cluster,
    status,
    tiny_data,
    tiny_pretrain_args,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EVAL_PROFILE = """\
# a small eval allocation: one task, no GPU, short time limit (what --eval-profile is for)
nodes: 1
gpus_per_node: 0
tasks_per_node: 1
cpus_per_task: 1
time: "00:15:00"
max_requeues: 0
env:
  OMP_NUM_THREADS: "1"
"""


def _submit(run, tiny_data, humaneval_path, profile, fault: str):
    eval_args = f"--task humaneval --data {humaneval_path} --limit 1 --max-new-tokens 8 --workers 1"
    phi(
        *tiny_pretrain_args(
            run,
            tiny_data,
            "--cluster",
            "slurm",
            "--set",
            "steps=30",
            "--set",
            "checkpoint.every=10",
            "--eval-every",
            "10",
            "--eval-profile",
            str(profile),
            "--eval-args",
            eval_args,
        ),
        env={"PHI_HPC_FAULT": fault},
    )


@pytest.fixture(scope="module")
def runs(slurm_cluster, tiny_data, humaneval_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals-while-training")
    profile = root / "eval-profile.yaml"
    profile.write_text(EVAL_PROFILE)
    slow, broken = root / "slow", root / "broken"
    _submit(slow, tiny_data, humaneval_path, profile, "sleep-per-step:5")  # ~100 s of training after step 10
    _submit(broken, tiny_data, humaneval_path, profile, "kill-at-step:25")  # every rank dies after step 25
    slow_rows = wait_for(slow, ["train", "eval-step-10", "eval-step-20", "eval-step-30"], timeout=900)
    broken_rows = wait_for(broken, ["train", "eval-step-10", "eval-step-20"], timeout=600)
    return slow, slow_rows, broken, broken_rows


def test_step_10_is_scored_before_training_finishes(runs):
    slow, rows, *_ = runs
    assert all(rows[name]["state"] == "COMPLETED" for name in rows), (rows, debug_logs(slow))
    train_end = max(e["time"] for e in attempts(slow) if e["job"] == "train" and e["event"] == "end")
    results = slow / "eval" / "step-10" / "results.json"
    assert results.stat().st_mtime < train_end, "step 10's result came only after training ended"
    assert json.loads(results.read_text())["model"]["step"] == 10
    eval_start = min(e["time"] for e in attempts(slow) if e["job"] == "eval-step-10" and e["event"] == "start")
    assert eval_start >= (slow / "eval" / "checkpoints" / "10" / "config.json").stat().st_mtime
    assert eval_start < train_end and rows["eval-step-10"]["scores"].startswith("humaneval pass@1")
    starts = [e for e in attempts(slow) if e["job"] == "eval-step-10" and e["event"] == "start"]
    assert starts[0]["world_size"] == 1  # the eval profile: one task


def test_a_failed_run_still_has_its_published_checkpoints_scored(runs):
    *_, broken, rows = runs
    assert rows["train"]["state"] == "FAILED", rows
    assert rows["train"]["reason"], f"status must say why training failed: {rows['train']}"
    for step in (10, 20):
        assert rows[f"eval-step-{step}"]["state"] == "COMPLETED", (rows, debug_logs(broken))
        assert (broken / "eval" / f"step-{step}" / "results.json").is_file()
    assert "eval-step-30" not in rows  # never published, never submitted
    report = json.loads(phi("status", str(broken), "--json").stdout)
    assert [row["step"] for row in report["pass_at_1"]] == [10, 20]
    text = phi("status", str(broken)).stdout
    assert "FAILED" in text and "pass@1 so far: step 10 humaneval" in text
