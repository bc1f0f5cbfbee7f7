"""status, logs, cancel and every --help run on login nodes: they must not import torch or deepspeed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi_hpc.launch.runs import JobRecord, RunRecord, append_attempt, log_dir, save_run
from tests.launch.conftest import REPO_ROOT, cli_env

HEAVY = {"torch", "deepspeed", "transformers", "tokenizers"}


def imported_by(args: list[str]) -> tuple[set[str], str]:
    """Run the CLI in a fresh interpreter; return the top-level modules it imported, and its stdout."""
    code = (
        "import sys, json\nfrom phi_hpc.cli import main\ntry:\n"
        f"    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('MODULES=' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=cli_env(), timeout=120
    )
    line = [text for text in done.stdout.splitlines() if text.startswith("MODULES=")][-1]
    return set(json.loads(line[len("MODULES=") :])), done.stdout + done.stderr


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A run folder as a finished local training job leaves it (metrics, logs, attempt records)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    save_run(
        RunRecord(
            kind="pretrain",
            run_dir=str(run_dir),
            executor="local",
            profile={},
            command=["phi-hpc"],
            git_commit=None,
            jobs=[JobRecord("train", dead_pid, ["train", "config.yaml"], "local")],
        )
    )
    append_attempt(run_dir, {"event": "start", "job": "train", "job_id": dead_pid, "restarts": 0})
    logs = log_dir(run_dir, "train", dead_pid, 0)
    logs.mkdir(parents=True)
    (logs / "rank0.out").write_text("[train] step 1\n[train] step 2 loss 9.5\n")
    (logs / "rank0.err").write_text("warning: nothing\n")
    with open(run_dir / "metrics.jsonl", "w") as handle:
        for step, loss in ((1, 10.0), (2, 9.5)):
            handle.write(json.dumps({"step": step, "loss": loss, "tokens_per_s": 1234.0, "time": time.time()}) + "\n")
        handle.write(json.dumps({"step": 2, "val_loss": 9.7}) + "\n")
    append_attempt(
        run_dir,
        {"event": "end", "job": "train", "job_id": dead_pid, "restarts": 0, "exit_code": 0, "status": "completed"},
    )
    return run_dir


@pytest.mark.parametrize(
    "args",
    [
        ["status", "{run}"],
        ["status", "{run}", "--json"],
        ["logs", "{run}"],
        ["logs", "{run}", "--err", "-n", "1"],
        ["logs", "{run}", "--follow"],
        ["cancel", "{run}"],
        ["submit", "--help"],
        ["submit", "pretrain", "--help"],
        ["submit", "eval", "--help"],
        ["submit", "prepare", "--help"],
        ["status", "--help"],
        ["logs", "--help"],
        ["cancel", "--help"],
        ["logs", "{run}", "--rank", "all"],
        ["doctor", "--help"],
    ],
)
def test_watch_commands_do_not_import_torch(finished_run, args):
    modules, output = imported_by([a.format(run=finished_run) for a in args])
    assert not modules & HEAVY, f"phi-hpc {' '.join(args)} imported {sorted(modules & HEAVY)}"
    if args[:2] == ["status", "{run}"]:
        assert "COMPLETED" in output and "9.5" in output
    if args == ["logs", "{run}"]:
        assert "[train] step 2 loss 9.5" in output
    if args == ["logs", "{run}", "--rank", "all"]:
        assert "[rank0] [train] step 2 loss 9.5" in output
    if args == ["cancel", "{run}"]:
        assert "already COMPLETED" in output


def test_status_json_reports_the_latest_step(finished_run):
    from phi_hpc.launch.watch import run_status

    _, rows = run_status(finished_run)
    (row,) = rows
    assert (row.state, row.step, row.loss, row.tokens_per_s, row.val_loss) == ("COMPLETED", 2, 9.5, 1234.0, 9.7)
    assert row.last_line == "[train] step 2 loss 9.5"


def test_status_of_a_folder_that_is_not_a_run(run_cli, tmp_path):
    done = run_cli("status", str(tmp_path))
    assert done.returncode == 2 and "no run.json" in done.stderr and "Traceback" not in done.stderr


def test_status_without_run_lists_recent_submissions(finished_run, tmp_path, monkeypatch):
    from phi_hpc.launch.runs import recent_runs, remember_run

    monkeypatch.setenv("PHI_HPC_RUN_INDEX", str(tmp_path / "index.txt"))
    assert recent_runs() == []
    remember_run(finished_run)
    remember_run(tmp_path / "not-a-run")  # vanished or never submitted: skipped
    remember_run(finished_run)
    assert recent_runs() == [finished_run.resolve()]
    done = subprocess.run(
        [sys.executable, "-m", "phi_hpc", "status", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**cli_env(), "PHI_HPC_RUN_INDEX": str(tmp_path / "index.txt")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_dir"] == str(finished_run)
