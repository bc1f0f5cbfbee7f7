"""Fixtures for the launch tests: the real local Slurm cluster, tiny prepared data, polling helpers.

The cluster is the one of ``slurm/local-cluster/start.sh`` (node1 and node2 on 127.0.0.2/.3, 4 fake GPUs
each, MaxArraySize=4). CI
starts it before pytest; when ``sinfo`` does not answer (a developer's fresh shell), the session
fixture starts it. Tests never pass when it cannot come up: they fail with its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

START_SCRIPT = REPO_ROOT / "slurm" / "local-cluster" / "start.sh"
TINY_PRETRAIN = REPO_ROOT / "configs" / "tiny-pretrain.yaml"
# 20 steps of 8 sequences x 32 tokens on 2 CPU processes; checkpoints at 5, 10, 15, 20.
TINY_SETTINGS = [
    "data.seq_len=32",
    "steps=20",
    "checkpoint.every=5",
    "checkpoint.keep_last=3",
    "validation.every=10",
    "logging.console_every=1",
]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "LOST", "PREEMPTED"}


def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The local Slurm cluster, started if it is not answering."""
    if not _sinfo_answers():
        done = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"slurm/local-cluster/start.sh failed:\n{done.stderr[-3000:]}")
    if not _sinfo_answers():
        pytest.fail("the local Slurm cluster does not answer sinfo after start.sh")


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PHI_HPC_FAULT", None)
    # `status` without RUN lists recent submissions from this index: keep the tests' out of the user's.
    env["PHI_HPC_RUN_INDEX"] = str(Path(tempfile.gettempdir()) / "phi-hpc-test-runs.txt")
    env.update(extra or {})
    return env


def phi(
    *args: str, check: bool = True, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``phi-hpc ARGS`` like a user on the login node."""
    done = subprocess.run(
        [sys.executable, "-m", "phi_hpc", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=cwd or REPO_ROOT,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"phi-hpc {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return done


def status(run_dir: Path) -> dict[str, dict]:
    """``phi-hpc status RUN --json`` as {job name: row}."""
    rows = json.loads(phi("status", str(run_dir), "--json").stdout)["jobs"]
    return {row["name"]: row for row in rows}


def wait_for(run_dir: Path, names: list[str], timeout: float = 300, poll: float = 2.0) -> dict[str, dict]:
    """Poll status until every named job has finished (states as Slurm reports them)."""
    deadline = time.monotonic() + timeout
    rows: dict = {}
    while time.monotonic() < deadline:
        rows = status(run_dir)
        if all(name in rows and rows[name]["state"].split()[0] in TERMINAL for name in names):
            return rows
        time.sleep(poll)
    raise AssertionError(f"jobs {names} of {run_dir} did not finish in {timeout} s: {rows}\n" + debug_logs(run_dir))


def debug_logs(run_dir: Path) -> str:
    """Every rank's log of every attempt, for assertion messages."""
    parts = []
    for path in sorted((run_dir / "logs").rglob("rank*.*")) if (run_dir / "logs").is_dir() else []:
        parts.append(f"--- {path.relative_to(run_dir)}\n{path.read_text(errors='replace')[-2500:]}")
    return "\n".join(parts)


def step_losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record per step (a resumed run recomputes the steps after its checkpoint)."""
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def attempts(run_dir: Path) -> list[dict]:
    """Every job's attempt records of a run, oldest first (RUN/attempts/<job id>.jsonl)."""
    from phi_hpc.launch.runs import read_attempts

    return read_attempts(run_dir)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, stdlib_dir, codegen_tokenizer) -> Path:
    """A prepare output of two stdlib packages (train + validation), phi-1's tokenizer."""
    out = tmp_path_factory.mktemp("launch-data") / "stdlib"
    phi(
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
    )
    return out


def tiny_pretrain_args(run_dir: Path, data: Path, *extra: str) -> list[str]:
    settings = [f"data.paths=[{data}]", *TINY_SETTINGS]
    return [
        "submit",
        "pretrain",
        str(TINY_PRETRAIN),
        "--profile",
        "local",
        "--run-dir",
        str(run_dir),
        *[a for s in settings for a in ("--set", s)],
        *extra,
    ]


def eval_args(run_dir: Path, tokenizer: Path, *extra: str) -> list[str]:
    """``submit eval`` of RUN's latest checkpoint after RUN: one HumanEval problem, 8 tokens, no GPU."""
    return [
        "submit",
        "eval",
        "--checkpoint",
        str(run_dir / "checkpoints" / "latest"),
        "--after",
        str(run_dir),
        "--profile",
        "local",
        "--tasks-per-node",
        "1",
        "--gpus-per-node",
        "0",
        *extra,
        "--",
        "--task",
        "humaneval",
        "--limit",
        "1",
        "--max-new-tokens",
        "8",
        "--tokenizer",
        str(tokenizer),
        "--workers",
        "1",
    ]
