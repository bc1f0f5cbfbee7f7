"""Acceptance 5: a run SIGKILLed at any point and rerun gives byte-identical outputs; outputs do not
depend on --workers or on running the stages as separate (Slurm array) commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi_hpc.fileio import sha256_file
from tests.conftest import REPO_ROOT

FINAL_FILES = (
    "train.bin",
    "train.idx",
    "validation.bin",
    "validation.idx",
    "manifest.json",
    "audit.jsonl",
    "bad_inputs.jsonl",
)


def _command(inputs, tokenizer, out, workers, *extra):
    return [
        sys.executable,
        "-m",
        "phi_hpc",
        "prepare",
        *map(str, inputs),
        "--tokenizer",
        str(tokenizer),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--set",
        "shard_mb=0.25",
        "--set",
        "split.validation_fraction=0.05",
        *extra,
    ]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def _digests(out: Path) -> dict[str, str]:
    return {name: sha256_file(out / name) for name in FINAL_FILES}


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _run_and_kill(cmd, trigger) -> bool:
    """Start the command in its own process group and SIGKILL the whole group (as Slurm does) as
    soon as ``trigger()`` is true. Returns whether it was killed before finishing."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True
    )
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if trigger():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stdlib_packages, codegen_tokenizer):
    """The digests of an uninterrupted run with 2 workers."""
    out = tmp_path_factory.mktemp("reference") / "out"
    _run(_command(stdlib_packages, codegen_tokenizer, out, 2))
    return _digests(out)


def _finished_shards(out: Path) -> int:
    """Map shards whose done-marker exists (the work folder is named by the run's fingerprint)."""
    work = out / ".work"
    return len(list(work.glob("*/map/shard-*.json"))) if work.is_dir() else 0


@pytest.mark.slow
def test_sigkill_at_every_stage_then_rerun_is_byte_identical(reference, stdlib_packages, codegen_tokenizer, tmp_path):
    out = tmp_path / "out"
    cmd = _command(stdlib_packages, codegen_tokenizer, out, 1)
    work = out / ".work"

    def exists(pattern: str) -> bool:  # the work folder is named by the run's fingerprint
        return work.is_dir() and any(work.glob(pattern))

    triggers = [
        ("first shard done", lambda: exists("*/map/shard-00000.json")),
        ("mid-shard (a temporary .bin exists)", lambda: exists("*/map/shard-*.bin.tmp.*")),
        ("several shards done", lambda: exists("*/map/shard-00005.json")),
        ("reduce done", lambda: exists("*/reduce.json")),
        ("train.bin published", lambda: (out / "train.bin").exists()),
    ]
    killed = []
    for name, trigger in triggers:
        if _run_and_kill(cmd, trigger):
            killed.append(name)
            assert not (out / "manifest.json").exists() or name == "train.bin published"
    # The map and reduce kill points are wide enough to hit every time; the pack window is narrow.
    assert killed[:4] == [name for name, _ in triggers[:4]], killed
    _run(cmd)
    assert _digests(out) == reference
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*.tmp")), "no temporary files left behind"


@pytest.mark.slow
def test_sigkill_during_parallel_map_then_rerun_is_byte_identical(
    reference, stdlib_packages, codegen_tokenizer, tmp_path
):
    """Two map workers killed together, by progress rather than by a fraction of a reference run's
    wall time (which missed under load): each attempt resumes and is killed as soon as it has
    finished 1, 2 or 2 more shards, when the other worker is usually mid-shard; then once more
    right after the reduce. Every kill point lies inside the run, so every attempt is killed."""
    out = tmp_path / "out"
    cmd = _command(stdlib_packages, codegen_tokenizer, out, 2)
    shards = json.loads(_run(cmd + ["--stage", "plan"]).stdout)["shards"]
    assert shards >= 6, "the corpus must outlast the three map kill points"
    killed = []
    for more in (1, 2, 2):
        before = _finished_shards(out)
        if _run_and_kill(cmd, lambda before=before, more=more: _finished_shards(out) >= before + more):
            killed.append(f"map +{more} (from {before})")
    if _run_and_kill(cmd, lambda: any((out / ".work").glob("*/reduce.json"))):
        killed.append("reduce done")
    assert len(killed) == 4, killed
    assert not (out / "manifest.json").exists()
    _run(cmd)
    assert _digests(out) == reference


@pytest.mark.slow
def test_stages_run_separately_like_a_slurm_array(reference, stdlib_packages, codegen_tokenizer, tmp_path):
    out = tmp_path / "out"
    base = _command(stdlib_packages, codegen_tokenizer, out, 1)
    total = json.loads(_run(base + ["--stage", "plan"]).stdout)["shards"]
    assert total >= 4
    for shard in reversed(range(total)):  # any order, one process per shard
        _run(base + ["--stage", "map", "--shard", str(shard)])
    _run(base + ["--stage", "reduce"])
    _run(base + ["--stage", "pack"])
    assert _digests(out) == reference
    # A finished run is recognised and not redone.
    proc = _run(base)
    assert json.loads((out / "summary.json").read_text())["status"] == "already complete", proc.stderr
