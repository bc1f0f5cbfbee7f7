"""Config files carry the paper's hyperparameters; the DeepSpeed JSON and LR schedule follow them."""

from __future__ import annotations

import pytest

from phi_hpc.errors import UsageError
from phi_hpc.train.config import TrainConfig, load_train_config
from phi_hpc.train.engine import deepspeed_config, lr_at, parameter_groups
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def test_pretrain_config_is_the_papers():
    cfg = load_train_config(CONFIGS / "pretrain.yaml", check_paths=False)
    assert (cfg.batch.global_size, cfg.data.seq_len) == (1024, 2048)
    assert (cfg.optim.lr, cfg.schedule.warmup_steps, cfg.optim.weight_decay, cfg.steps) == (1e-3, 750, 0.1, 36000)
    assert cfg.schedule.kind == "linear"
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.resid_dropout) == (24, 2048, 0.1)
    assert 24000 % cfg.checkpoint.keep_every == 0  # phi-1-base (step 24000) survives checkpoint pruning


def test_finetune_config_is_the_papers():
    cfg = load_train_config(CONFIGS / "finetune.yaml", check_paths=False)
    assert (cfg.batch.global_size, cfg.optim.lr, cfg.schedule.warmup_steps) == (256, 1e-4, 50)
    assert (cfg.optim.weight_decay, cfg.steps, cfg.checkpoint.every) == (0.01, 6000, 1000)
    assert cfg.data.format == "jsonl"


def test_overrides_and_strictness(tmp_path):
    cfg = load_train_config(CONFIGS / "tiny-pretrain.yaml", ["deepspeed.zero_stage=2", f"data.paths=[{tmp_path}]"])
    assert cfg.deepspeed.zero_stage == 2 and cfg.data.paths == [str(tmp_path)]
    with pytest.raises(UsageError, match="deepspeed.zero_stage must be one of"):
        load_train_config(CONFIGS / "tiny-pretrain.yaml", ["deepspeed.zero_stage=3"])
    with pytest.raises(UsageError, match="unknown key 'optim.learning_rate'"):
        load_train_config(CONFIGS / "tiny-pretrain.yaml", ["optim.learning_rate=1"])
    with pytest.raises(UsageError, match="exceeds model.max_position_embeddings"):
        load_train_config(CONFIGS / "tiny-pretrain.yaml", ["data.seq_len=4096"])


def test_deepspeed_json_from_config_and_world_size():
    cfg = load_train_config(CONFIGS / "pretrain.yaml", check_paths=False)
    ds = deepspeed_config(cfg, world_size=8, device_type="cuda")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        1024,
        8,
        16,
    )
    assert ds["zero_optimization"] == {"stage": 1}
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert ds["optimizer"] == {
        "type": "AdamW",
        "params": {
            "lr": 1e-3,
            "betas": [0.9, 0.95],
            "eps": 1e-8,
            "weight_decay": 0.1,
            "torch_adam": True,
            "fused": True,
        },
    }
    assert ds["gradient_clipping"] == 1.0
    assert deepspeed_config(cfg, world_size=32, device_type="cuda")["gradient_accumulation_steps"] == 4
    bf16 = load_train_config(
        CONFIGS / "pretrain.yaml",
        ["deepspeed.precision=bf16", "deepspeed.extra={zero_optimization: {overlap_comm: true}}"],
        check_paths=False,
    )
    ds = deepspeed_config(bf16, world_size=8, device_type="cuda")
    assert ds["bf16"] == {"enabled": True} and "fp16" not in ds
    assert ds["zero_optimization"] == {"stage": 1, "overlap_comm": True}
    with pytest.raises(UsageError, match="not divisible"):
        deepspeed_config(cfg, world_size=3, device_type="cuda")


def test_linear_warmup_then_linear_decay():
    peak, warmup, total = 1e-3, 750, 36000
    assert lr_at(0, peak, warmup, total, "linear") == pytest.approx(peak / 750)
    assert lr_at(749, peak, warmup, total, "linear") == pytest.approx(peak)
    assert lr_at(750, peak, warmup, total, "linear") == pytest.approx(peak)
    middle = warmup + (total - warmup) // 2
    assert lr_at(middle, peak, warmup, total, "linear") == pytest.approx(peak / 2, rel=1e-3)
    assert lr_at(total, peak, warmup, total, "linear") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(middle, peak, warmup, total, "cosine", min_lr=1e-4) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-3)
    assert lr_at(total, peak, warmup, total, "cosine", min_lr=1e-4) == pytest.approx(1e-4)
    assert lr_at(20000, peak, warmup, total, "constant") == peak


def test_weight_decay_spares_biases_and_layernorms():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3


def test_defaults_build():
    assert TrainConfig().batch.accumulation_steps(8) == 16


def test_bad_train_invocations_fail_in_one_line_before_deepspeed_starts(run_cli, tmp_path):
    missing = run_cli("train", str(CONFIGS / "tiny-pretrain.yaml"), "--set", f"data.paths=[{tmp_path}/nope]")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: {CONFIGS / 'tiny-pretrain.yaml'}: data path {tmp_path}/nope does not exist "
        "(set data.paths to a prepare output folder (phi-hpc prepare ... -o DIR))"
    ]
    typo = run_cli("train", str(CONFIGS / "tiny-pretrain.yaml"), "--set", "optim.lrr=1")
    assert typo.returncode == 2 and "unknown key 'optim.lrr'" in typo.stderr and "Traceback" not in typo.stderr
    batch = run_cli(
        "train",
        str(CONFIGS / "tiny-pretrain.yaml"),
        "--set",
        f"data.paths=[{tmp_path}]",
        "--set",
        "batch.global_size=7",
        "--set",
        "run_dir=" + str(tmp_path / "run"),
        env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"},
    )
    assert batch.returncode == 2 and "not divisible" in batch.stderr and "Traceback" not in batch.stderr
