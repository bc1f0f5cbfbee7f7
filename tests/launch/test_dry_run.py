"""--dry-run prints the batch script a user would otherwise write by hand (no cluster needed)."""

from __future__ import annotations

import re

from tests.launch.conftest import REPO_ROOT, phi


def directives(script: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r"^#SBATCH --([\w-]+)(?:=(\S+))?$", script, re.MULTILINE):
        found[match.group(1)] = (match.group(2) or "").strip("'")  # submitit shell-quotes odd values
    return found


def test_a100x8_two_nodes(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    done = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "pretrain.yaml"),
        "--nodes",
        "2",
        "--run-dir",
        str(run_dir),
        "--partition",
        "gpu",
        "--time",
        "2-00:00:00",
        "--dry-run",
        "--set",
        f"data.paths=[{tiny_data}]",
    )
    flags = directives(done.stdout)
    assert flags["nodes"] == "2"
    assert flags["gpus-per-node"] == "8"
    assert flags["ntasks-per-node"] == "8"
    assert flags["cpus-per-task"] == "10"
    assert flags["time"] == "2-00:00:00"
    assert flags["partition"] == "gpu"
    assert flags["signal"] == "USR2@300"
    assert "requeue" in flags and "exclusive" in flags
    assert flags["output"] == f"{run_dir}/submitit/%j_0_log.out"
    assert flags["error"] == f"{run_dir}/submitit/%j_0_log.err"
    srun = [line for line in done.stdout.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1 and "--kill-on-bad-exit=1" in srun[0] and "submitit.core._submit" in srun[0]
    assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in done.stdout
    assert flags["constraint"] == "a100_80gb"  # a 40 GB A100 runs out of memory at micro-batch 8
    assert "phi-hpc train" in done.stdout and "config.yaml" in done.stdout
    assert not run_dir.exists(), "--dry-run must not create the run folder"


def test_eval_after_a_job_uses_afterok_and_kill_on_invalid_dep(tmp_path):
    done = phi(
        "submit",
        "eval",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--after",
        "4242",
        "-o",
        str(tmp_path / "out"),
        "--dry-run",
        "--",
        "--task",
        "humaneval",
    )
    flags = directives(done.stdout)
    assert flags["dependency"] == "afterok:4242"
    assert flags["kill-on-invalid-dep"] == "yes"
    assert "eval run --checkpoint" in done.stdout and "--task humaneval" in done.stdout


def test_eval_every_shows_the_eval_jobs_the_training_job_will_submit(tmp_path, tiny_data):
    """Each step's eval job is submitted by the training job when it publishes that step: no afterok."""
    eval_profile = tmp_path / "eval.yaml"
    eval_profile.write_text(
        "nodes: 1\ngpus_per_node: 1\ntasks_per_node: 1\ncpus_per_task: 4\ntime: '00:20:00'\npartition: evalq\n"
    )
    done = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "tiny-pretrain.yaml"),
        "--profile",
        "local",
        "--run-dir",
        str(tmp_path / "run"),
        "--eval-every",
        "10",
        "--eval-profile",
        str(eval_profile),
        "--dry-run",
        "--set",
        f"data.paths=[{tiny_data}]",
        "--set",
        "steps=30",
    )
    evals = re.findall(r"^# --- job (eval-step-\d+)", done.stdout, re.MULTILINE)
    assert evals == ["eval-step-10", "eval-step-20", "eval-step-30"]
    assert "--dependency" not in done.stdout and "kill-on-invalid-dep" not in done.stdout
    train, *eval_scripts = done.stdout.split("# --- job ")[1:]
    assert "partition" not in directives(train) and directives(train)["ntasks-per-node"] == "2"
    for script in eval_scripts:
        flags = directives(script)
        assert flags["partition"] == "evalq" and flags["time"] == "00:20:00" and flags["ntasks-per-node"] == "1"
    assert f"eval run --checkpoint {tmp_path / 'run' / 'eval' / 'checkpoints' / '10'}" in done.stdout


def test_eval_every_must_match_saved_checkpoints(tmp_path, tiny_data):
    done = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "tiny-pretrain.yaml"),
        "--profile",
        "local",
        "--eval-every",
        "7",
        "--dry-run",
        "--set",
        f"data.paths=[{tiny_data}]",
        check=False,
    )
    assert done.returncode == 2
    assert "multiple of checkpoint.every" in done.stderr and "Traceback" not in done.stderr


def test_prepare_is_an_array_then_reduce_then_pack(tmp_path, stdlib_dir, codegen_tokenizer):
    done = phi(
        "submit",
        "prepare",
        "--dry-run",
        "--run-dir",
        str(tmp_path / "run"),
        "--",
        str(stdlib_dir / "json"),
        str(stdlib_dir / "email"),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(tmp_path / "out"),
    )
    scripts = done.stdout.split("# --- ")[1:]
    assert [s.split()[0] for s in scripts] == ["array", "job", "job"]
    array = directives(scripts[0])
    assert re.fullmatch(r"0-(\d+)%\d+", array["array"])
    assert "gpus-per-node" not in array and array["ntasks-per-node"] == "1"
    assert "--stage map --shard 0" in scripts[0]
    assert "--stage reduce" in scripts[1] and directives(scripts[1])["dependency"] == "afterok:<prepare-map>"
    assert "--stage pack" in scripts[2] and directives(scripts[2])["dependency"] == "afterok:<prepare-reduce>"


def test_bad_cluster_option_is_one_line(tmp_path, tiny_data):
    done = phi(
        "submit",
        "pretrain",
        str(REPO_ROOT / "configs" / "tiny-pretrain.yaml"),
        "--time",
        "soon",
        "--dry-run",
        "--set",
        f"data.paths=[{tiny_data}]",
        check=False,
    )
    assert done.returncode == 2
    assert "time" in done.stderr and done.stderr.strip().count("\n") == 0


def test_finetune_submits_the_same_training_job(tmp_path, codegen_tokenizer):
    examples = tmp_path / "exercises.jsonl"
    examples.write_text('{"prompt": "def one():\\n", "completion": "    return 1\\n"}\n')
    run_dir = tmp_path / "finetune"
    args = [
        "submit",
        "finetune",
        str(REPO_ROOT / "configs" / "tiny-finetune.yaml"),
        "--profile",
        "local",
        "--run-dir",
        str(run_dir),
        "--dry-run",
        "--set",
        f"data.paths=[{examples}]",
        "--set",
        f"checkpoint.init_from={tmp_path / 'pretrain-run'}",
    ]
    # The shipped config names phi-1's tokenizer by hub id: offline and not cached, that is a one-line
    # error saying how to fetch it on a login node, before anything is queued.
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    missing = phi(*args, env=offline, check=False)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "microsoft/phi-1" in missing.stderr and "phi-hpc fetch tokenizer" in missing.stderr
    done = phi(*args, "--set", f"data.tokenizer={codegen_tokenizer}")
    assert f"# --- job train: phi-hpc train {run_dir}/config.yaml" in done.stdout
    flags = directives(done.stdout)
    assert flags["ntasks-per-node"] == "2" and flags["gpus-per-node"] == "2" and flags["signal"] == "USR2@30"
    assert flags["job-name"] == "phi-train-finetune"
