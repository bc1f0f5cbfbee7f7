"""Arrays at cluster scale: a prepare plan larger than the cluster's MaxArraySize becomes several arrays,
each throttled to --max-parallel, reduce after all of them; the outputs equal a one-process run's bytes.

The local cluster runs with MaxArraySize=4 (slurm/local-cluster/start.sh), small on purpose.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from phi_hpc.launch.preparation import cluster_max_array_size, split_into_arrays
from tests.launch.conftest import phi, wait_for

# json + email at 0.05 MB per shard: a plan of 10 shards.
SHARDS, SHARD_MB = 10, "0.05"


def prepare_args(stdlib_dir: Path, tokenizer: Path, out: Path) -> list[str]:
    return [
        str(stdlib_dir / "json"),
        str(stdlib_dir / "email"),
        "--tokenizer",
        str(tokenizer),
        "-o",
        str(out),
        "--max-documents",
        "40",
        "--set",
        f"shard_mb={SHARD_MB}",
    ]


def test_split_into_arrays():
    assert split_into_arrays(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert split_into_arrays(3, 1001) == [range(0, 3)]
    assert split_into_arrays(8, 4) == [range(0, 4), range(4, 8)]


def test_dry_run_splits_by_the_clusters_max_array_size(tmp_path, stdlib_dir, codegen_tokenizer):
    """A scripted scontrol says MaxArraySize=4: the dry run shows three throttled arrays, reduce after all."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(
        "#!/bin/sh\necho 'MaxArraySize            = 4'\necho 'MaxJobCount             = 10000'\n"
    )
    (fake_bin / "scontrol").chmod(0o755)
    done = phi(
        "submit",
        "prepare",
        "--dry-run",
        "--max-parallel",
        "2",
        "--",
        *prepare_args(stdlib_dir, codegen_tokenizer, tmp_path / "out"),
        env={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"},
    )
    arrays = re.findall(r"^#SBATCH --array=(\S+)$", done.stdout, re.MULTILINE)
    assert arrays == ["0-3%2", "0-3%2", "0-1%2"], done.stdout[:3000]
    assert [int(s) for s in re.findall(r"--stage map --shard (\d+)$", done.stdout, re.MULTILINE)] == [0, 4, 8]
    assert "afterok:<prepare-map-0>:<prepare-map-1>:<prepare-map-2>" in done.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_ten_shards_on_max_array_size_4_run_as_three_arrays_like_a_local_run(
    slurm_cluster, stdlib_dir, codegen_tokenizer, tmp_path
):
    assert cluster_max_array_size() == 4, "start the local cluster with LOCAL_SLURM_MAX_ARRAY_SIZE=4 (the default)"
    out, run_dir, reference = tmp_path / "out", tmp_path / "run", tmp_path / "reference"
    phi(
        "submit",
        "prepare",
        "--profile",
        "local",
        "--run-dir",
        str(run_dir),
        "--max-parallel",
        "2",
        "--",
        *prepare_args(stdlib_dir, codegen_tokenizer, out),
    )
    names = ["prepare-map-0", "prepare-map-1", "prepare-map-2", "prepare-reduce", "prepare-pack"]
    rows = wait_for(run_dir, names, timeout=400)
    assert all(rows[name]["state"] == "COMPLETED" for name in names), rows
    jobs = {job["name"]: job for job in json.loads((run_dir / "run.json").read_text())["jobs"]}
    assert [jobs[f"prepare-map-{i}"]["array_size"] for i in range(3)] == [4, 4, 2]
    assert jobs["prepare-reduce"]["depends_on"] == [jobs[f"prepare-map-{i}"]["job_id"] for i in range(3)]
    # each array was submitted with its %2 throttle
    scripts = "\n".join(p.read_text() for p in (run_dir / "submitit").glob("*_submission.sh"))
    assert sorted(re.findall(r"^#SBATCH --array=(\S+)$", scripts, re.MULTILINE)) == ["0-1%2", "0-3%2", "0-3%2"]
    # the first element's arguments are recorded per array: each array starts at its own shard
    assert [jobs[f"prepare-map-{i}"]["argv"][-2:] for i in range(3)] == [
        ["--shard", "0"],
        ["--shard", "4"],
        ["--shard", "8"],
    ]
    logs = sorted(p.name for i in range(3) for p in (run_dir / "logs" / f"prepare-map-{i}").iterdir())
    assert len(logs) == SHARDS  # ten elements ran, one per shard
    phi("prepare", *prepare_args(stdlib_dir, codegen_tokenizer, reference), "--workers", "1")
    manifest = json.loads((reference / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert got["counts"] == manifest["counts"] and len(got["outputs"]) == len(manifest["outputs"]) > 0
    for output in manifest["outputs"]:  # the Megatron files themselves, byte for byte
        for suffix in ("bin", "idx"):
            name = f"{output['prefix']}.{suffix}"
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert (out / "audit.jsonl").read_bytes() == (reference / "audit.jsonl").read_bytes()
