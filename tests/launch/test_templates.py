"""The plain sbatch templates in slurm/templates/, submitted by hand to the local cluster.

(pretrain.sbatch runs beside the other interrupted trainings: test_slurm.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch.conftest import REPO_ROOT, cli_env, phi

TEMPLATES = REPO_ROOT / "slurm" / "templates"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def test_templates_are_valid_bash():
    for template in sorted(TEMPLATES.glob("*.sbatch")):
        done = subprocess.run(["bash", "-n", str(template)], capture_output=True, text=True)
        assert done.returncode == 0, f"{template.name}: {done.stderr}"


def test_every_srun_of_the_templates_passes_cpus_per_task_and_none_has_a_wckey():
    """srun of Slurm 22.05-23.02 does not inherit --cpus-per-task from sbatch."""
    for template in sorted(TEMPLATES.glob("*.sbatch")):
        text = template.read_text()
        for line in (line for line in text.splitlines() if line.lstrip().startswith("srun ")):
            assert "--cpus-per-task=" in line, f"{template.name}: {line}"
        assert "wckey" not in text


def sbatch(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env({"PHI_HPC_PYTHON": sys.executable}),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def sacct_state(job: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"], capture_output=True, text=True, timeout=60
    ).stdout.split()
    return out[0] if out else ""


def wait_states(jobs: list[str], timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        states = {job: sacct_state(job) for job in jobs}
        if all(state.startswith(TERMINAL) for state in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"jobs did not finish: {states}")


@pytest.mark.slurm
@pytest.mark.slow
def test_prepare_templates_array_then_finish(slurm_cluster, stdlib_dir, codegen_tokenizer, tmp_path):
    out = tmp_path / "out"
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
    plan = phi("submit", "prepare", "--dry-run", "--", *args).stdout
    last = int(re.search(r"^#SBATCH --array=0-(\d+)", plan, re.MULTILINE).group(1))
    array = sbatch(f"--array=0-{last}", "--cpus-per-task=1", str(TEMPLATES / "prepare-map.sbatch"), *args, cwd=tmp_path)
    finish = sbatch(
        f"--dependency=afterok:{array}",
        "--kill-on-invalid-dep=yes",
        "--cpus-per-task=1",
        str(TEMPLATES / "prepare-finish.sbatch"),
        *args,
        cwd=tmp_path,
    )
    states = wait_states([array, finish], timeout=200)
    assert states == {array: "COMPLETED", finish: "COMPLETED"}, states
    reference = tmp_path / "reference"
    phi("prepare", *[a if a != str(out) else str(reference) for a in args], "--workers", "1")
    got, expected = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert got["counts"] == expected["counts"]
    assert [o["sha256"] for o in got["outputs"]] == [o["sha256"] for o in expected["outputs"]]
