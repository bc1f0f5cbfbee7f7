"""What a real site sees of a submission, without a cluster: the rendered scripts (prepare/eval job
profiles, srun's --cpus-per-task, no wckey, the site knobs), `--cluster auto` against a controller that
does not answer, and the environment sbatch runs in when submitting from inside an allocation.

`sbatch` and `sinfo` are shell shims first on PATH: the shim records what it was given (arguments,
script, environment), so the tests check what phi-hpc handed to Slurm.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.launch.conftest import REPO_ROOT, phi
from tests.launch.test_dry_run import directives

TINY = str(REPO_ROOT / "configs" / "tiny-pretrain.yaml")


def prepare_dry_run(tmp_path, stdlib_dir, codegen_tokenizer, *options: str) -> list[str]:
    done = phi(
        "submit",
        "prepare",
        "--dry-run",
        "--run-dir",
        str(tmp_path / "run"),
        *options,
        "--",
        str(stdlib_dir / "json"),
        str(stdlib_dir / "email"),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(tmp_path / "out"),
        "--set",
        "shard_mb=0.2",
    )
    return done.stdout.split("# --- ")[1:]


def test_prepare_with_the_a100x8_profile_asks_for_cpus_not_gpu_nodes(tmp_path, stdlib_dir, codegen_tokenizer):
    scripts = prepare_dry_run(tmp_path, stdlib_dir, codegen_tokenizer, "--profile", "a100x8", "--max-parallel", "2")
    arrays = [s for s in scripts if s.startswith("array")]
    assert arrays and len(scripts) == len(arrays) + 2
    for script in scripts:
        flags = directives(script)
        assert not {"gpus-per-node", "gres", "exclusive", "constraint", "mem"} & set(flags), flags
        assert flags["mem-per-cpu"] == "4G" and flags["cpus-per-task"] == "8" and flags["time"] == "04:00:00"
        assert "--mem=0" not in script and "gpu" not in script.lower().replace("phi-hpc", "")
    for script in arrays:  # the same throttle a real submission gets (Submitter passes the same parallelism)
        assert re.fullmatch(r"0-\d+%2", directives(script)["array"]), directives(script)["array"]


def test_prepare_command_line_overrides_apply_to_the_prepare_profile(tmp_path, stdlib_dir, codegen_tokenizer):
    scripts = prepare_dry_run(
        tmp_path,
        stdlib_dir,
        codegen_tokenizer,
        "--profile",
        "a100x8",
        "--time",
        "01:00:00",
        "--partition",
        "cpu",
        "--cpus-per-task",
        "2",
    )
    flags = directives(scripts[0])
    assert flags["time"] == "01:00:00" and flags["partition"] == "cpu" and flags["cpus-per-task"] == "2"


def test_eval_job_profile_takes_one_gpu_and_its_own_time(tmp_path):
    done = phi("submit", "eval", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(tmp_path / "out"), "--dry-run")
    flags = directives(done.stdout)
    assert flags["gpus-per-node"] == "1" and flags["ntasks-per-node"] == "1" and flags["time"] == "04:00:00"
    assert "exclusive" not in flags and "mem" not in flags and flags["mem-per-cpu"] == "8G"


def srun_line(script: str) -> str:
    lines = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(lines) == 1, script
    return lines[0]


def test_rendered_scripts_pass_cpus_per_task_to_srun_and_no_wckey(tmp_path, tiny_data, stdlib_dir, codegen_tokenizer):
    train = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "pretrain.yaml"),
        "--dry-run",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"data.paths=[{tiny_data}]",
    ).stdout
    evaluation = phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "c"),
        "-o",
        str(tmp_path / "o"),
        "--profile",
        "local",
        "--dry-run",
    ).stdout
    scripts = [train, evaluation, *prepare_dry_run(tmp_path, stdlib_dir, codegen_tokenizer)]
    for script in scripts:
        cpus = directives(script)["cpus-per-task"]
        assert f"--cpus-per-task={cpus}" in srun_line(script)
        assert "wckey" not in script
    assert "--cpus-per-task=10" in srun_line(train)


def test_site_knobs_reach_the_script(tmp_path, tiny_data):
    profile = tmp_path / "site.yaml"
    profile.write_text(
        (REPO_ROOT / "configs" / "cluster" / "a100x8.yaml")
        .read_text()
        .replace("reservation: null", "reservation: maint")
        .replace("exclude: null", 'exclude: "gpu[07,12]"')
        .replace("gres: null", 'gres: "gpu:a100:8"')
        .replace("wckey: null", "wckey: phi1")
        .replace("python: null", "python: /opt/venv/bin/python")
        .replace("srun_args: []", 'srun_args: ["--mpi=pmix"]')
    )
    script = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "pretrain.yaml"),
        "--profile",
        str(profile),
        "--dry-run",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"data.paths=[{tiny_data}]",
    ).stdout
    flags = directives(script)
    assert flags["reservation"] == "maint" and flags["exclude"] == "gpu[07,12]" and flags["wckey"] == "phi1"
    assert flags["gres"] == "gpu:a100:8" and "gpus-per-node" not in flags  # the typed gres replaces it
    assert "--mpi=pmix" in srun_line(script) and "/opt/venv/bin/python -u -m submitit.core._submit" in script


def test_a_profile_with_an_unknown_job_key_is_one_line(tmp_path, tiny_data):
    profile = tmp_path / "bad.yaml"
    profile.write_text("prepare:\n  cpus: 4\n")
    done = phi(
        "submit",
        "pretrain",
        TINY,
        "--profile",
        str(profile),
        "--dry-run",
        "--set",
        f"data.paths=[{tiny_data}]",
        check=False,
    )
    assert done.returncode == 2 and "prepare: unknown key(s) cpus" in done.stderr
    assert done.stderr.strip().count("\n") == 0


# ---------------------------------------------------------------------------- shims
@pytest.fixture
def shims(tmp_path):
    """A bin folder first on PATH with an `sbatch` that records its arguments, script and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch-calls"
    record.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/bash
n=$(ls {record}/*.env 2>/dev/null | wc -l)
env > {record}/$n.env
for a in "$@"; do case "$a" in *.sh) cp "$a" {record}/$n.sh ;; esac; done
echo "Submitted batch job $((4242 + n))"
""")
    (bin_dir / "sbatch").chmod(0o755)

    def sinfo(body: str) -> None:
        (bin_dir / "sinfo").write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / "sinfo").chmod(0o755)

    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, sinfo, record


@pytest.mark.parametrize(
    "sinfo_body",
    ["exec sleep 30", "echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2; exit 1"],
)
def test_auto_with_an_unanswering_controller_is_an_error_not_a_local_run(tmp_path, tiny_data, shims, sinfo_body):
    env, sinfo, record = shims
    sinfo(sinfo_body)
    run_dir = tmp_path / "run"
    done = phi(
        "submit",
        "pretrain",
        TINY,
        "--profile",
        "local",
        "--cluster",
        "auto",
        "--run-dir",
        str(run_dir),
        "--set",
        f"data.paths=[{tiny_data}]",
        env={**env, "PHI_HPC_SINFO_TIMEOUT": "2"},
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and "controller does not answer" in done.stderr, done.stderr
    assert "--cluster local" in done.stderr
    assert not run_dir.exists(), "nothing may be started or recorded"
    assert list(record.iterdir()) == []  # and nothing submitted


def test_submitting_from_inside_an_allocation_does_not_pass_its_slurm_settings_on(tmp_path, shims):
    env, sinfo, record = shims
    sinfo("exit 0")
    allocation = {
        "SLURM_JOB_ID": "777",
        "SLURM_NTASKS": "16",
        "SLURM_CPUS_PER_TASK": "12",
        "SLURM_MEM_PER_NODE": "0",
        "SLURM_JOB_NODELIST": "gpu[01-02]",
        "SLURM_GPUS_PER_NODE": "8",
        "SBATCH_EXCLUSIVE": "1",
        "SRUN_CPUS_PER_TASK": "12",
        "SLURMD_NODENAME": "gpu01",
        "MASTER_ADDR": "gpu01",
        "RANK": "3",
        "SLURM_CONF": str(tmp_path / "slurm.conf"),
    }
    run_dir = tmp_path / "run"
    phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "-o",
        str(tmp_path / "out"),
        "--profile",
        "local",
        "--cluster",
        "slurm",
        "--run-dir",
        str(run_dir),
        env={**env, **allocation},
    )
    seen = dict(line.split("=", 1) for line in (record / "0.env").read_text().splitlines() if "=" in line)
    leaked = sorted(k for k in seen if k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_")) and k != "SLURM_CONF")
    assert leaked == [], leaked
    assert seen["SLURM_CONF"] == allocation["SLURM_CONF"]  # which cluster to talk to is kept
    assert "RANK" not in seen and "MASTER_ADDR" not in seen


def test_jobs_run_the_submitted_code_snapshot(tmp_path, shims):
    env, sinfo, record = shims
    sinfo("exit 0")
    run_dir = tmp_path / "run"
    phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "-o",
        str(tmp_path / "out"),
        "--profile",
        "local",
        "--cluster",
        "slurm",
        "--run-dir",
        str(run_dir),
        env=env,
    )
    script = (record / "0.sh").read_text()
    copies = list((run_dir / "code").iterdir())
    assert len(copies) == 1 and f"export PYTHONPATH={copies[0]}" in script
    copied = copies[0] / "phi_hpc" / "launch" / "task.py"
    assert copied.read_bytes() == (REPO_ROOT / "phi_hpc" / "launch" / "task.py").read_bytes()
    assert (copies[0] / "configs" / "cluster" / "a100x8.yaml").is_file()
    # Resubmitting unchanged code reuses the copy; the record keeps which job is newest.
    phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "-o",
        str(tmp_path / "out"),
        "--profile",
        "local",
        "--cluster",
        "slurm",
        "--run-dir",
        str(run_dir),
        env=env,
    )
    assert list((run_dir / "code").iterdir()) == copies
    from phi_hpc.launch.runs import load_run

    record_ = load_run(run_dir)
    assert [j.job_id for j in record_.jobs] == ["4242", "4243"] and record_.job("eval-ckpt").job_id == "4243"


def test_local_jobs_record_their_host(tmp_path):
    import socket

    from phi_hpc.launch.runs import load_run

    run_dir = tmp_path / "run"
    phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "missing"),
        "-o",
        str(tmp_path / "out"),
        "--profile",
        "local",
        "--cluster",
        "local",
        "--tasks-per-node",
        "1",
        "--gpus-per-node",
        "0",
        "--run-dir",
        str(run_dir),
    )
    job = load_run(run_dir).jobs[0]
    assert job.executor == "local" and job.host == socket.gethostname()
