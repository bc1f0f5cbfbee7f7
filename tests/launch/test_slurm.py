"""Acceptance on the real local Slurm cluster: training jobs, eval chains, requeues, logs, local executor.

Every training here is the same tiny pretrain (2 tasks, CPU DeepSpeed, 20 steps), so each run's
per-step losses must equal the uninterrupted baseline's, however it was interrupted or launched.
Runs are shared across assertions (module fixtures) to keep the suite within a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch.conftest import (
    REPO_ROOT,
    TINY_PRETRAIN,
    TINY_SETTINGS,
    attempts,
    cli_env,
    debug_logs,
    eval_args,
    phi,
    status,
    step_losses,
    tiny_pretrain_args,
    wait_for,
)
from tests.launch.interrupts import Follower, Interrupter, current_step

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.deepspeed]

STEPS = 20
TEMPLATES = REPO_ROOT / "slurm" / "templates"


def sacct_state(job: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"], capture_output=True, text=True, timeout=60
    ).stdout.split()
    return out[0] if out else "PENDING"


# ---------------------------------------------------------------------------- 1 + 2: a run and its eval
@pytest.fixture(scope="module")
def baseline(slurm_cluster, tiny_data, codegen_tokenizer, tmp_path_factory):
    """Uninterrupted tiny pretrain with its --eval-every evaluations and one chained to it (``eval-latest``);
    alongside, a training run that crashes (with its own chained eval) and one the user cancels."""
    root = tmp_path_factory.mktemp("submit")
    run_dir, broken, cancelled = root / "baseline", root / "broken", root / "cancelled"
    # keep_last=1: the step-10 checkpoint is pruned long before its --eval-every job runs.
    phi(
        *tiny_pretrain_args(
            run_dir,
            tiny_data,
            "--eval-every",
            "10",
            "--eval-args",
            "--task humaneval --limit 1 --max-new-tokens 8 --workers 1",
            "--set",
            "checkpoint.keep_last=1",
        )
    )
    phi(*eval_args(run_dir, codegen_tokenizer))
    early = status(run_dir)
    # The trainer's fault hook: every rank SIGKILLs itself after step 2, like a node dying.
    phi(*tiny_pretrain_args(broken, tiny_data), env={"PHI_HPC_FAULT": "kill-at-step:2"})
    phi(*eval_args(broken, codegen_tokenizer))
    phi(*tiny_pretrain_args(cancelled, tiny_data))
    cancel_output = None
    deadline = time.monotonic() + 400
    while cancel_output is None and time.monotonic() < deadline:
        if current_step(cancelled) >= 2:
            cancel_output = phi("cancel", str(cancelled)).stdout
        time.sleep(1)
    rows = wait_for(run_dir, ["train", "eval-latest", "eval-step-10", "eval-step-20"], timeout=400)
    broken_rows = wait_for(broken, ["train", "eval-latest"], timeout=200)
    cancelled_rows = wait_for(cancelled, ["train"], timeout=100)
    return run_dir, early, rows, broken, broken_rows, cancelled, cancelled_rows, cancel_output


def test_pretrain_completes_with_checkpoints_and_metrics(baseline):
    run_dir, _, rows, *_ = baseline
    train = rows["train"]
    assert train["state"] == "COMPLETED", debug_logs(run_dir)
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert train["step"] == STEPS and train["loss"] == pytest.approx(losses[STEPS])
    assert train["requeues"] == 0
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == str(STEPS)
    assert not (run_dir / "checkpoints" / "10").exists()  # pruned (keep_last=1)
    assert (run_dir / "checkpoints" / str(STEPS) / "config.json").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["executor"] == "slurm" and record["kind"] == "pretrain"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "submitit").is_dir()
    # 2 tasks really ran: one log per rank, rank 0 saw world size 2.
    logs = run_dir / "logs" / "train" / train["job_id"] / "attempt-0"
    assert (logs / "rank0.out").is_file() and (logs / "rank1.out").is_file()
    assert "rank 0/2" in (logs / "rank0.out").read_text()

    text = phi("status", str(run_dir)).stdout
    assert "COMPLETED" in text and str(STEPS) in text and f"{losses[STEPS]:.4f}" in text


def test_eval_waits_for_training_then_runs(baseline):
    run_dir, early, rows, *_ = baseline
    # Right after submission the eval job was held by its dependency, not running.
    assert early["eval-latest"]["state"] == "PENDING", early
    assert "Dependency" in early["eval-latest"]["reason"], early
    assert rows["eval-latest"]["state"] == "COMPLETED", debug_logs(run_dir)
    events = attempts(run_dir)
    train_end = max(e["time"] for e in events if e["job"] == "train" and e["event"] == "end")
    eval_start = min(e["time"] for e in events if e["job"] == "eval-latest" and e["event"] == "start")
    assert eval_start > train_end
    results = json.loads((run_dir / "eval" / "latest" / "results.json").read_text())
    assert "humaneval" in json.dumps(results)


def test_eval_every_evaluates_each_checkpoint_as_it_is_published(baseline):
    run_dir, early, rows, *_ = baseline
    events = attempts(run_dir)
    for step in (10, 20):
        name = f"eval-step-{step}"
        assert name not in early, early  # not queued at submission: the training job submits it
        assert rows[name]["state"] == "COMPLETED", debug_logs(run_dir)
        # It read the snapshot kept for it, not the pruned checkpoint, which existed before the job started.
        snapshot = run_dir / "eval" / "checkpoints" / str(step)
        assert (snapshot / "model.safetensors").is_file() and (snapshot / "tokenizer.json").is_file()
        started = min(e["time"] for e in events if e["job"] == name and e["event"] == "start")
        assert (snapshot / "config.json").stat().st_mtime <= started
        results = json.loads((run_dir / "eval" / f"step-{step}" / "results.json").read_text())
        assert "humaneval" in json.dumps(results)
        assert rows[name]["scores"].startswith("humaneval pass@1 "), rows[name]
    # The snapshot is a hard link of the checkpoint's weights, not a copy (no extra space).
    assert (run_dir / "eval" / "checkpoints" / "20" / "model.safetensors").stat().st_nlink >= 2
    assert "pass@1 so far: step 10 humaneval" in phi("status", str(run_dir)).stdout


def test_failed_training_cancels_its_eval(baseline):
    _, _, _, run_dir, rows, *_ = baseline
    assert rows["train"]["state"] == "FAILED", rows
    assert rows["eval-latest"]["state"] == "CANCELLED", rows
    reason = rows["eval-latest"]["reason"]
    assert "dependency train" in reason and "FAILED" in reason, reason
    assert not [e for e in attempts(run_dir) if e["job"] == "eval-latest"], "the eval job must never have started"
    assert "kill-on-invalid-dep" in phi("status", str(run_dir)).stdout


def test_cancel_stops_training_for_good(baseline):
    *_, run_dir, rows, cancel_output = baseline
    assert cancel_output is not None, "the run to cancel never reached step 2"
    assert f"train ({rows['train']['job_id']}): cancelled" in cancel_output
    assert rows["train"]["state"] == "CANCELLED", rows
    # The trainer checkpointed on scancel's SIGTERM, and the job did not requeue itself.
    time.sleep(12)  # longer than the cluster's requeue delay
    assert status(run_dir)["train"]["state"] == "CANCELLED"
    events = attempts(run_dir)
    assert [e["event"] for e in events] == ["start", "end"], events
    assert events[-1]["status"] == "stopped" and events[-1]["exit_code"] == 75


# ---------------------------------------------------------------------------- 3 + 4: requeues and logs
@pytest.fixture(scope="module")
def interrupted(slurm_cluster, tiny_data, tmp_path_factory):
    """Two runs of the baseline config, at the same time.

    ``requeued``: an operator runs ``scontrol requeue`` at step 7, while ``logs --follow`` watches.
    ``limited``: a 2-minute time limit with SIGUSR2 60 s before it, frozen until the signal is surely
    out so that it lands mid-run (:class:`tests.launch.interrupts.Interrupter` does both).
    """
    root = tmp_path_factory.mktemp("interrupted")
    requeued, limited, by_hand = root / "requeued", root / "limited", root / "by-hand"
    phi(*tiny_pretrain_args(limited, tiny_data, "--time", "2", "--signal-delay", "60"))
    phi(*tiny_pretrain_args(requeued, tiny_data))
    follower = Follower(requeued)
    # Third: slurm/templates/pretrain.sbatch submitted by hand, sent SIGUSR2 at step 2 (what Slurm
    # does before a time limit), which must checkpoint, requeue itself and finish.
    by_hand.mkdir()
    settings = [f"data.paths=[{tiny_data}]", f"run_dir={by_hand / 'run'}", *TINY_SETTINGS]
    template_job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--ntasks-per-node=2",
            "--gpus-per-node=2",
            "--cpus-per-task=1",
            "--mem=1G",
            "--time=30",
            str(TEMPLATES / "pretrain.sbatch"),
            str(TINY_PRETRAIN),
            *[a for s in settings for a in ("--set", s)],
        ],
        capture_output=True,
        text=True,
        cwd=by_hand,
        env=cli_env({"PHI_HPC_PYTHON": sys.executable}),
        check=True,
    ).stdout.strip()
    usr2_sent = False
    interrupter = Interrupter(requeued, limited)
    deadline = time.monotonic() + 420
    rows: dict = {}
    with follower, interrupter:
        while time.monotonic() < deadline:
            if not usr2_sent and current_step(by_hand / "run") >= 2:
                subprocess.run(["scancel", "--signal=USR2", template_job], check=True, capture_output=True)
                usr2_sent = True
            interrupter.poll()
            rows = {name: status(run)["train"] for name, run in (("requeued", requeued), ("limited", limited))}
            rows["by-hand"] = {"state": sacct_state(template_job), "job_id": template_job}
            if all(row["state"].split()[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for row in rows.values()):
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"interrupted runs did not finish: {rows}\n{debug_logs(requeued)}\n{debug_logs(limited)}"
            )
        follow_code = follower.finish()
    requeue_sent, frozen, limit_lifted = interrupter.requeue_sent, interrupter.frozen, interrupter.limit_lifted
    assert requeue_sent and frozen and limit_lifted and usr2_sent, (requeue_sent, frozen, limit_lifted, usr2_sent)
    return requeued, limited, rows, follower, follow_code, by_hand


def _assert_resumed_like_baseline(run_dir: Path, row: dict, baseline_dir: Path) -> None:
    assert row["state"] == "COMPLETED", debug_logs(run_dir)
    assert row["requeues"] >= 1 and row["step"] == STEPS
    second = run_dir / "logs" / "train" / row["job_id"] / "attempt-1" / "rank0.out"
    assert "resumed from" in second.read_text(), debug_logs(run_dir)
    expected, got = step_losses(baseline_dir), step_losses(run_dir)
    assert sorted(got) == sorted(expected)
    assert [got[s] for s in sorted(got)] == pytest.approx([expected[s] for s in sorted(expected)], rel=1e-6)


def test_operator_requeue_resumes_from_checkpoint(interrupted, baseline):
    requeued, _, rows, *_ = interrupted
    _assert_resumed_like_baseline(requeued, rows["requeued"], baseline[0])
    first_end = next(e for e in attempts(requeued) if e["event"] == "end")
    assert first_end["exit_code"] == 75 and first_end["status"] == "requeued"  # checkpointed on SIGTERM


def test_time_limit_signal_checkpoints_and_requeues(interrupted, baseline):
    _, limited, rows, *_ = interrupted
    _assert_resumed_like_baseline(limited, rows["limited"], baseline[0])
    first_end = next(e for e in attempts(limited) if e["event"] == "end")
    # The trainer caught SIGUSR2 (exit 75) and the job requeued itself.
    assert first_end["status"] == "requeued" and first_end["exit_code"] == 75, attempts(limited)
    first_log = (limited / "logs" / "train" / rows["limited"]["job_id"] / "attempt-0" / "rank0.out").read_text()
    assert "preempted by a signal" in first_log and "requeueing job" in first_log


def test_logs_follow_prints_new_lines_and_crosses_the_requeue(interrupted):
    requeued, _, rows, follower, follow_code, _ = interrupted
    assert follow_code == 0
    text = [line for _, line in follower.lines]
    job = rows["requeued"]["job_id"]
    header = f"==> logs/train/{job}/attempt-1/rank0.out <=="
    assert header in text, "\n".join(text[-40:])
    before, after = text[: text.index(header)], text[text.index(header) + 1 :]
    assert any("preempted by a signal" in line for line in before)
    assert any("resumed from" in line for line in after)
    assert any(f"step {STEPS}" in line or f"{STEPS}/{STEPS}" in line for line in after), after[-10:]
    # Lines arrived while the job was running, not in one piece at the end.
    job_end = max(e["time"] for e in attempts(requeued) if e["event"] == "end")
    assert follower.lines[0][0] < job_end


def test_pretrain_template_checkpoints_and_requeues_on_usr2(interrupted, baseline):
    *_, by_hand = interrupted
    rows = interrupted[2]
    assert rows["by-hand"]["state"] == "COMPLETED", rows
    job = rows["by-hand"]["job_id"]
    log = (by_hand / f"slurm-phi-pretrain-{job}.out").read_text()
    assert "requeueing (restart 1 of at most 10)" in log, log[-3000:]
    assert re.search(r"job \d+ restart 1: 2 tasks", log) and "resumed from" in log
    expected, got = step_losses(baseline[0]), step_losses(by_hand / "run")
    assert [got[s] for s in sorted(got)] == pytest.approx([expected[s] for s in sorted(expected)], rel=1e-6)


# ---------------------------------------------------------------------------- prepare as an array
def test_prepare_runs_as_an_array_then_reduce_then_pack(slurm_cluster, stdlib_dir, codegen_tokenizer, tmp_path):
    out, run_dir = tmp_path / "out", tmp_path / "run"
    args = [
        str(stdlib_dir / "json"),
        str(stdlib_dir / "email"),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
        "--max-documents",
        "40",
        "--set",
        "shard_mb=0.2",
    ]
    phi("submit", "prepare", "--profile", "local", "--run-dir", str(run_dir), "--", *args)
    rows = wait_for(run_dir, ["prepare-map", "prepare-reduce", "prepare-pack"], timeout=200)
    assert all(row["state"] == "COMPLETED" for row in rows.values()), rows
    shards = json.loads((run_dir / "run.json").read_text())["jobs"][0]["array_size"]
    assert shards > 1 and rows["prepare-map"]["reason"] == f"{shards} COMPLETED"
    assert len(list((run_dir / "logs" / "prepare-map").iterdir())) == shards  # one element per shard
    # Same manifest counts as the single-process command on the same inputs.
    reference = tmp_path / "reference"
    phi("prepare", *[a if a != str(out) else str(reference) for a in args], "--workers", "1")
    got, expected = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert got["counts"] == expected["counts"]
    assert [o["sha256"] for o in got["outputs"]] == [o["sha256"] for o in expected["outputs"]]


# ---------------------------------------------------------------------------- 7: no Slurm
def test_local_executor_runs_the_same_pretrain_without_slurm(tiny_data, tmp_path, baseline):
    """Without `sbatch` (a laptop, a CI box), `--cluster auto` picks submitit's local executor. (With `sbatch`
    and a failing controller it is an error instead: test_site.py.)"""
    fake_bin = tmp_path / "bin"  # every command of PATH but sbatch
    fake_bin.mkdir()
    for folder in cli_env()["PATH"].split(os.pathsep):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name != "sbatch" and not (fake_bin / name).exists():
                (fake_bin / name).symlink_to(Path(folder) / name)
    env = {"PATH": str(fake_bin)}
    run_dir = tmp_path / "local"
    done = phi(*tiny_pretrain_args(run_dir, tiny_data), env=env)
    assert "(local)" in done.stdout
    record = json.loads((run_dir / "run.json").read_text())
    assert record["executor"] == "local"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        row = status(run_dir)["train"]
        if row["state"] in ("COMPLETED", "FAILED", "LOST"):
            break
        time.sleep(2)
    assert row["state"] == "COMPLETED", debug_logs(run_dir)
    expected, got = step_losses(baseline[0]), step_losses(run_dir)
    assert [got[s] for s in sorted(got)] == pytest.approx([expected[s] for s in sorted(expected)], rel=1e-6)
    assert (run_dir / "checkpoints" / str(STEPS) / "config.json").is_file()


def test_eval_after_an_already_failed_job_is_refused(baseline, codegen_tokenizer):
    """afterok on a dead job could never start: a one-line error instead of sbatch's 'dependency problem'."""
    _, _, _, broken, *_ = baseline
    done = phi(*eval_args(broken, codegen_tokenizer), check=False)
    assert done.returncode == 2 and "already ended FAILED" in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
