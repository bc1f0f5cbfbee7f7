"""Rank discovery from torchrun/srun/nothing as the trainer sees it, and the metrics file's contract."""

from __future__ import annotations

import json

import pytest

from phi_hpc.distenv import detect as detect_environment
from phi_hpc.distenv import port_for_job
from phi_hpc.run_layout import find_checkpoint
from phi_hpc.train.checkpoint import CheckpointManager
from phi_hpc.train.metrics import MetricsWriter, Throughput, console_line


def test_torch_variables_win():
    torch_vars = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "3",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "1234",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_STEP_ID": "0",
    }
    env = detect_environment({**torch_vars, "TORCHELASTIC_RUN_ID": "x"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == (
        3,
        8,
        3,
        "n1",
        1234,
        "torchrun",
    )
    assert detect_environment(torch_vars).source == "env"  # exported by a wrapper, e.g. a submitit task


def test_slurm_step_variables_are_translated():
    slurm = {
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_STEP_NUM_TASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[007-008]",
    }
    env = detect_environment(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.source) == (9, 16, 1, "slurm")
    assert env.master_port == port_for_job("4242") == 24242
    assert env.master_addr == "gpu007"
    exported: dict = {}
    env.export(exported)
    assert exported == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "NODE_RANK": "0",
        "MASTER_ADDR": "gpu007",
        "MASTER_PORT": "24242",
    }


def test_ranks_exported_by_a_wrapper_get_the_rendezvous_from_slurm():
    env = detect_environment(
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "SLURM_PROCID": "1",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_ID": "77",
            "SLURM_JOB_NODELIST": "node[3-4]",
        }
    )
    assert (env.rank, env.local_rank, env.master_addr, env.master_port, env.source) == (1, 1, "node3", 20077, "env")


def test_the_batch_script_itself_is_a_single_process():
    env = detect_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "5"})
    assert (env.rank, env.world_size, env.source) == (0, 1, "single")


def test_throughput_and_mfu_arithmetic():
    t = Throughput(flops_per_token=6e9, world_size=8, peak_flops_per_device=312e12)
    m = t.measure(tokens=2_097_152, seconds=10.0)
    assert m["tokens_per_s"] == pytest.approx(209715.2)
    assert m["tflops"] == pytest.approx(209715.2 * 6e9 / 8 / 1e12, rel=1e-5)
    assert m["mfu"] == pytest.approx(209715.2 * 6e9 / 8 / 312e12, rel=1e-5)
    assert Throughput(6e9, 1, None).measure(100, 1.0)["mfu"] is None
    line = console_line({"step": 5, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "loss_scale": 1.0, **m}, 10)
    assert line.startswith("step 5/10 | loss 2.5000 | lr 1.00e-03 | grad 0.500") and "MFU" in line


def test_metrics_truncate_drops_steps_to_be_recomputed(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl", enabled=True)
    for step in range(1, 6):
        writer.log({"step": step, "loss": float(step)})
    writer.log({"step": 5, "val_loss": 1.0})
    writer.close()
    writer.truncate_after(3)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    silent = MetricsWriter(tmp_path / "other.jsonl", enabled=False)
    silent.log({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_latest_pointer_and_fallback(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    for step in (10, 20):
        (ckpts / str(step)).mkdir(parents=True)
        (ckpts / str(step) / "trainer_state.json").write_text("{}")
    (ckpts / "30").mkdir()  # no state file: an incomplete folder never counts
    manager = CheckpointManager(ckpts, keep_last=2, rank=0, world_size=1, barrier=lambda: None)
    assert manager.latest() == ckpts / "20"  # no pointer: newest complete
    (ckpts / "latest").write_text("10\n")
    assert manager.latest() == ckpts / "10"  # the pointer is the truth
    assert find_checkpoint(tmp_path / "run").folder == ckpts / "10"
    assert find_checkpoint(ckpts / "latest").folder == ckpts / "10"
    assert find_checkpoint(ckpts / "20").folder == ckpts / "20"


def test_pruning_keeps_the_newest_and_the_milestones(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, rank=0, world_size=1, barrier=lambda: None, keep_every=4)
    for step in range(1, 11):
        (tmp_path / str(step)).mkdir()
        (tmp_path / str(step) / "trainer_state.json").write_text("{}")
    manager._prune()
    assert manager.complete_steps() == [4, 8, 9, 10]
