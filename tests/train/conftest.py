"""Real training runs shared by the trainer's end-to-end tests (each DeepSpeed launch costs ~15 s here).

Data: ``phi-hpc prepare`` on two standard-library packages with phi-1's tokenizer. Runs: two CPU
processes under torchrun with DeepSpeed (gloo), the tiny config at sequence length 32 for 12 steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as REPO

TINY_PRETRAIN = REPO / "configs" / "tiny-pretrain.yaml"
TINY_FINETUNE = REPO / "configs" / "tiny-finetune.yaml"
STEPS = 12
# 12 steps of 8 x 32 tokens (a faster LR than the config's 30-step default, to learn in 12);
# checkpoints at 4, 8, 12 (keep 2); validation every 6.
RUN_SETTINGS = [
    "data.seq_len=32",
    f"steps={STEPS}",
    "optim.lr=6e-3",
    "schedule.warmup_steps=3",
    "checkpoint.every=4",
    "checkpoint.keep_last=2",
    "validation.every=6",
    "logging.console_every=4",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PHI_HPC_FAULT", None)
    env.update(extra or {})
    return env


def train_command(
    run_dir: Path, data: Path, *overrides: str, nproc: int = 2, config: Path = TINY_PRETRAIN
) -> list[str]:
    settings = [f"data.paths=[{data}]", f"run_dir={run_dir}", *RUN_SETTINGS, *overrides]
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master-port",
            str(free_port()),
        ]
        if nproc > 1
        else [sys.executable]
    )
    return [*launcher, "-m", "phi_hpc", "train", str(config), *[a for s in settings for a in ("--set", s)]]


def run_training(
    run_dir: Path, data: Path, *overrides: str, env: dict | None = None, nproc: int = 2, config: Path = TINY_PRETRAIN
) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(run_dir, data, *overrides, nproc=nproc, config=config),
        cwd=run_dir.parent,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def step_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r] if path.exists() else []


def validation_lines(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in step_lines(run_dir)]


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"training exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory, stdlib_dir, codegen_tokenizer) -> Path:
    """A prepare output (train + validation split) of two stdlib packages, tokenized for phi-1."""
    out = tmp_path_factory.mktemp("prepared") / "stdlib"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "phi_hpc",
            "prepare",
            str(stdlib_dir / "json"),
            str(stdlib_dir / "email"),
            "--tokenizer",
            str(codegen_tokenizer),
            "-o",
            str(out),
            "--workers",
            "1",
            "--max-documents",
            "40",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    splits = {o["split"] for o in json.loads((out / "manifest.json").read_text())["outputs"]}
    assert splits == {"train", "validation"}
    return out


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def baseline_run(runs_root, stdlib_data) -> Path:
    """The uninterrupted reference: ZeRO 0, fp32, 2 processes, 12 steps."""
    run_dir = runs_root / "baseline"
    assert_ok(run_training(run_dir, stdlib_data))
    return run_dir
