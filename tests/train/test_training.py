"""Acceptance 3 and 4 of the trainer: real DeepSpeed on two CPU processes (gloo) under torchrun.

3. the tiny config learns on stdlib data from `phi-hpc prepare`; ZeRO 0, 1 and 2 give the same losses.
4. SIGKILL at step k, then restart: the loss sequence (and data order) equals the uninterrupted run's
   exactly; a run killed while writing a checkpoint resumes from the previous one; SIGUSR2 makes every
   rank checkpoint at the next step and stop as "preempted", and resuming from there is exact too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.train.conftest import (
    REPO,
    STEPS,
    assert_ok,
    child_env,
    losses,
    run_training,
    step_lines,
    train_command,
    validation_lines,
)

pytestmark = [pytest.mark.deepspeed, pytest.mark.slow]

# fp16 on CPUs without oneDNN fp16 kernels (CI's AMD EPYC): see tests/train/cpu_fp16/sitecustomize.py
CPU_FP16_SHIM = Path(__file__).parent / "cpu_fp16"
CPU_FP16_ON = {
    "PYTHONPATH": os.pathsep.join([str(CPU_FP16_SHIM), str(REPO), os.environ.get("PYTHONPATH", "")]),
    "PHI_HPC_TEST_CPU_FP16": "on",
}
CPU_FP16_OFF = {**CPU_FP16_ON, "PHI_HPC_TEST_CPU_FP16": "off"}


def checkpoint_steps(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def latest(run_dir) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def weights(step_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "model.safetensors"))


# ------------------------------------------------------------------------------------ acceptance 3
def test_tiny_model_learns_and_reports_every_step(baseline_run):
    lines = step_lines(baseline_run)
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
    first, last = lines[0]["loss"], lines[-1]["loss"]
    assert first > 10.0  # ln(51200) = 10.84: an untrained model
    assert last < first - 1.5, [round(r["loss"], 3) for r in lines]
    validation = validation_lines(baseline_run)
    assert [v["step"] for v in validation] == [6, 12] and validation[1]["val_loss"] < validation[0]["val_loss"]
    for record in lines:
        assert record["consumed_samples"] == 8 * record["step"] and record["consumed_tokens"] == 8 * 32 * record["step"]
        assert record["grad_norm"] > 0 and record["loss_scale"] == 1.0 and record["skipped_steps"] == 0
        assert record["tokens_per_s"] > 0 and record["tflops"] > 0 and record["mfu"] is None  # no CPU peak
    # linear warmup over 3 updates to 6e-3, then linear decay to 0 over the remaining 9
    expected_lr = [2e-3, 4e-3, 6e-3] + [6e-3 * (9 - i) / 9 for i in range(9)]
    assert [r["lr"] for r in lines] == pytest.approx(expected_lr)
    summary = json.loads((baseline_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == STEPS and summary["world_size"] == 2
    assert summary["last_loss"] == pytest.approx(last) and summary["last_val_loss"] == validation[1]["val_loss"]
    assert summary["tokens_per_s"] > 0 and summary["resumed_from"] is None


def test_checkpoints_are_complete_pruned_and_loadable(baseline_run):
    from phi_hpc.model.hf import load_pretrained

    assert checkpoint_steps(baseline_run) == [8, 12]  # keep_last 2
    assert latest(baseline_run) == "12"
    step_dir = baseline_run / "checkpoints" / "12"
    assert json.loads((step_dir / "trainer_state.json").read_text())["sampler"]["consumed"] == 8 * STEPS
    assert {p.name for p in (step_dir / "rng").iterdir()} == {"rank-0.pt", "rank-1.pt"}
    config = json.loads((step_dir / "config.json").read_text())
    assert config["architectures"] == ["PhiForCausalLM"] and config["model_type"] == "phi"
    model = load_pretrained(step_dir)
    saved = weights(step_dir)
    assert {k: v.shape for k, v in saved.items()}  # non-empty, loadable
    assert sum(p.numel() for p in model.parameters()) == 6_704_640
    assert not list((baseline_run / "checkpoints").glob(".partial-*"))
    assert (baseline_run / "config.yaml").is_file() and (baseline_run / "deepspeed.json").is_file()


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stages_give_the_same_losses(baseline_run, runs_root, stdlib_data, stage):
    run_dir = runs_root / f"zero{stage}"
    assert_ok(
        run_training(
            run_dir, stdlib_data, f"deepspeed.zero_stage={stage}", "checkpoint.every=100", "checkpoint.save_hf=false"
        )
    )
    reference, measured = losses(baseline_run), losses(run_dir)
    assert len(measured) == STEPS
    assert measured == pytest.approx(reference, rel=1e-5, abs=1e-5)
    norms = [r["grad_norm"] for r in step_lines(run_dir)]
    assert norms == pytest.approx(
        [r["grad_norm"] for r in step_lines(baseline_run)], rel=2e-3
    )  # more sensitive than the loss


# ------------------------------------------------------------------------------------ acceptance 4
def test_sigkill_and_kill_during_checkpoint_resume_exactly(baseline_run, runs_root, stdlib_data):
    run_dir = runs_root / "killed"
    reference = step_lines(baseline_run)

    # 0. killed at step 2, before any checkpoint: the restart starts over, without duplicate metrics
    crashed = run_training(run_dir, stdlib_data, env={"PHI_HPC_FAULT": "kill-at-step:2"})
    assert crashed.returncode != 0 and [r["step"] for r in step_lines(run_dir)] == [1, 2]
    assert not (run_dir / "checkpoints" / "latest").exists()

    # 1. every rank is SIGKILLed right after step 7 (last checkpoint: 4)
    crashed = run_training(run_dir, stdlib_data, env={"PHI_HPC_FAULT": "kill-at-step:7"})
    assert crashed.returncode != 0
    assert [r["step"] for r in step_lines(run_dir)] == list(range(1, 8))
    assert losses(run_dir) == losses(baseline_run)[:7]
    assert latest(run_dir) == "4" and checkpoint_steps(run_dir) == [4]
    assert not (run_dir / "summary.json").exists()

    # 2. restart; this time the ranks die while writing checkpoint 8 (state written, not published)
    crashed = run_training(run_dir, stdlib_data, env={"PHI_HPC_FAULT": "kill-in-checkpoint:8"})
    assert crashed.returncode != 0
    assert latest(run_dir) == "4" and checkpoint_steps(run_dir) == [4]
    partial = run_dir / "checkpoints" / ".partial-8"
    assert (partial / "deepspeed").is_dir() and not (partial / "trainer_state.json").exists()
    resumed_once = step_lines(run_dir)
    assert [r["step"] for r in resumed_once] == list(range(1, 9))  # steps 5-7 were recomputed, not duplicated
    assert [r["loss"] for r in resumed_once] == [r["loss"] for r in reference[:8]]

    # 3. restart again: resumes from 4 (the previous complete checkpoint), finishes
    assert_ok(run_training(run_dir, stdlib_data))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("checkpoints/4")
    final = step_lines(run_dir)
    assert [r["loss"] for r in final] == [r["loss"] for r in reference]  # bit-identical, every step
    assert [r["consumed_samples"] for r in final] == [r["consumed_samples"] for r in reference]
    assert [v["val_loss"] for v in validation_lines(run_dir)] == [v["val_loss"] for v in validation_lines(baseline_run)]
    assert not partial.exists() and checkpoint_steps(run_dir) == [8, 12]
    trained, expected = weights(run_dir / "checkpoints" / "12"), weights(baseline_run / "checkpoints" / "12")
    assert trained.keys() == expected.keys()
    assert all(trained[k].equal(expected[k]) for k in expected)


def _worker_with_rank(launcher: psutil.Process, rank: int) -> psutil.Process:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "phi_hpc" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no worker with RANK={rank} under pid {launcher.pid}")


def test_sigusr2_checkpoints_at_the_next_step_and_resumes_exactly(baseline_run, runs_root, stdlib_data):
    run_dir = runs_root / "preempted"
    run_dir.mkdir()
    launcher = subprocess.Popen(
        train_command(run_dir, stdlib_data),
        cwd=runs_root,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(step_lines(run_dir)) < 2:  # signal once training is under way
            assert launcher.poll() is None and time.monotonic() < deadline, "training ended before the signal"
            time.sleep(0.05)
        _worker_with_rank(psutil.Process(launcher.pid), 0).send_signal(signal.SIGUSR2)  # one rank only
        output, _ = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["status"] == "preempted" and 2 <= stopped < STEPS, output[-3000:]
    assert "exitcode  : 75" in output or "exit code 75" in output  # the worker's status for the requeue logic
    assert latest(run_dir) == str(stopped) and summary["last_checkpoint"] == stopped
    assert len(step_lines(run_dir)) == stopped  # both ranks stopped at the same step

    assert_ok(run_training(run_dir, stdlib_data))
    assert losses(run_dir) == losses(baseline_run)
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"].endswith(f"checkpoints/{stopped}")


# ------------------------------------------------------------------ fp16 wiring (CPU can run it too)
def test_fp16_dynamic_loss_scaling_skips_overflows_and_backs_off(runs_root, stdlib_data):
    """Start at a loss scale that overflows fp16 gradients: DeepSpeed must skip those updates, halve
    the scale each time (hysteresis 1), not advance the LR schedule, then train normally."""
    run_dir = runs_root / "fp16"
    assert_ok(
        run_training(
            run_dir,
            stdlib_data,
            "deepspeed.precision=fp16",
            "deepspeed.zero_stage=1",
            "deepspeed.initial_scale_power=20",
            "deepspeed.hysteresis=1",
            "batch.global_size=4",
            "steps=4",
            "schedule.warmup_steps=4",
            "validation.every=0",
            "checkpoint.every=100",
            "checkpoint.save_hf=false",
            nproc=1,
            env=CPU_FP16_ON,
        )
    )
    lines = step_lines(run_dir)
    scale, skipped, updates = 2.0**20, 0, 0
    for r in lines:
        # the LR schedule counts real updates only (warmup: 6e-3 / 4 per update)
        assert r["lr"] == pytest.approx(1.5e-3 * (updates + 1)), r
        if r["skipped_steps"] > skipped:  # overflow: no update, scale halved (hysteresis 1)
            assert r["skipped_steps"] == skipped + 1 and r["loss_scale"] == scale / 2 and r["grad_norm"] is None
        else:  # a real update at the current scale
            assert r["loss_scale"] == scale and r["grad_norm"] > 0
            updates += 1
        scale, skipped = r["loss_scale"], r["skipped_steps"]
    assert skipped >= 1 and updates >= 1


def test_fp16_on_a_cpu_without_fp16_kernels_is_a_one_line_error(runs_root, stdlib_data):
    run_dir = runs_root / "fp16-refused"
    proc = run_training(
        run_dir,
        stdlib_data,
        "deepspeed.precision=fp16",
        "deepspeed.zero_stage=1",
        "batch.global_size=4",
        "steps=2",
        nproc=1,
        env=CPU_FP16_OFF,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "deepspeed.precision=fp16: this CPU has no fp16 kernels" in proc.stderr and "bf16" in proc.stderr
    assert "Traceback" not in proc.stderr and not (run_dir / "checkpoints").exists()
