"""``phi-hpc plan``: the cost of a config before submitting it, on a login node (no torch)."""

from __future__ import annotations

import json

import pytest

from phi_hpc.launch.plan import checkpoints_kept, parse_tokens
from tests.launch.conftest import REPO_ROOT
from tests.launch.test_light import HEAVY, imported_by


def test_phi1_at_50b_tokens_matches_the_paper(tmp_path):
    """The paper: phi-1 trained ~4 days on 8 A100s, i.e. ~770 GPU-hours, for about 50B tokens."""
    out = tmp_path / "plan.json"
    modules, output = imported_by(
        ["plan", str(REPO_ROOT / "configs" / "pretrain.yaml"), "--tokens", "50B", "--mfu", "0.53", "--json", str(out)]
    )
    assert not (modules & HEAVY), f"plan imported {modules & HEAVY}"
    plan = json.loads(out.read_text())
    assert abs(plan["gpu_hours"] - 770) <= 40, output
    assert plan["gpus"] == 8 and plan["gpu"] == "a100"
    assert plan["total_tokens"] == pytest.approx(50e9, rel=1e-3)
    assert plan["wall_hours"] == pytest.approx(plan["gpu_hours"] / 8)
    assert plan["jobs"] == 4 + 1 and plan["requeues"] == 4  # 95 h in 24 h jobs (10 min overhead each)
    assert "GPU-hours" in output and "763" in output


def test_epochs_requeues_checkpoints_and_evals(run_cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"counts": {"tokens": 10_000_000_000}}))
    out = tmp_path / "plan.json"
    done = run_cli(
        "plan",
        str(REPO_ROOT / "configs" / "pretrain.yaml"),
        "--mfu",
        "0.5",
        "--data",
        str(data),
        "--time",
        "12:00:00",
        "--nodes",
        "2",
        "--eval-every",
        "4000",
        "--json",
        str(out),
        check=True,
    )
    plan = json.loads(out.read_text())
    assert plan["total_tokens"] == 36000 * 1024 * 2048
    assert plan["epochs"] == pytest.approx(plan["total_tokens"] / 10e9)
    assert plan["gpus"] == 16 and plan["job_time_limit_h"] == 12
    assert plan["jobs"] == -(-plan["wall_hours"] // (12 - 10 / 60))
    assert plan["checkpoints_kept"] == 12  # 32000..36000 plus the milestones 4000, 8000, ..., 28000
    assert plan["eval_jobs"] == 9
    assert "epochs over the data" in done.stdout


def test_mfu_measured_by_an_earlier_run(run_cli, tmp_path):
    run = tmp_path / "trial"
    run.mkdir()
    rows = [{"step": i, "loss": 3.0, "mfu": 0.1 if i == 1 else 0.42} for i in range(1, 21)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 20, "val_loss": 3}\n')
    out = tmp_path / "plan.json"
    run_cli(
        "plan", str(REPO_ROOT / "configs" / "pretrain.yaml"), "--mfu-from", str(run), "--json", str(out), check=True
    )
    plan = json.loads(out.read_text())
    assert plan["mfu"] == pytest.approx(0.42) and "measured" in plan["mfu_source"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mfu", "1.5"], "--mfu 1.5"),
        ([], "exactly one of --mfu and --mfu-from"),
        (["--mfu", "0.5", "--tokens", "lots"], "--tokens lots"),
        (["--mfu", "0.5", "--profile", "local"], "cannot tell the GPU"),
    ],
)
def test_bad_options_are_one_line_errors(run_cli, args, message):
    done = run_cli("plan", str(REPO_ROOT / "configs" / "pretrain.yaml"), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_token_counts_and_kept_checkpoints():
    assert parse_tokens("50B") == 50e9 and parse_tokens("300m") == 300e6 and parse_tokens("7.5e9") == 7.5e9
    assert checkpoints_kept(steps=30, every=10, keep_last=3, keep_every=0) == 3
    assert checkpoints_kept(steps=100, every=10, keep_last=2, keep_every=40) == 4  # 90, 100, 40, 80
