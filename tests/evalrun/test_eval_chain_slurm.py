"""On the real local Slurm: `submit pretrain --eval-every` -> one eval job per checkpoint -> `eval curve`
(acceptance 3 of issue 6; the submit side is the launch area's, this checks the whole chain)."""

from __future__ import annotations

import json

import pytest

from tests.launch.conftest import debug_logs, phi, slurm_cluster, tiny_data, tiny_pretrain_args, wait_for  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _events(run_dir, event, job):
    from phi_hpc.launch.runs import read_attempts

    return [e for e in read_attempts(run_dir) if e.get("event") == event and e.get("job") == job]


def test_eval_every_chains_one_eval_per_checkpoint_and_curve_collects_them(
    slurm_cluster, tiny_data, tmp_path, humaneval_path
):
    run = tmp_path / "run"
    eval_args = f"--task humaneval --data {humaneval_path} --limit 2 --max-new-tokens 16 --batch-size 2 --workers 1"
    phi(*tiny_pretrain_args(run, tiny_data, "--cluster", "slurm", "--eval-every", "10", "--eval-args", eval_args))
    jobs = ["train", "eval-step-10", "eval-step-20"]
    rows = wait_for(run, jobs, timeout=600)
    assert all(rows[name]["state"] == "COMPLETED" for name in jobs), (rows, debug_logs(run))

    for step in (10, 20):
        starts = _events(run, "start", f"eval-step-{step}")
        assert starts, f"eval-step-{step} never started"
        kept = run / "eval" / "checkpoints" / str(step)
        # the checkpoint it evaluates existed (complete: config.json is written last) before it started
        assert (kept / "config.json").stat().st_mtime <= starts[0]["time"]
        assert starts[0]["world_size"] == 2  # the eval job's two tasks shared the problems
        results = json.loads((run / "eval" / f"step-{step}" / "results.json").read_text())
        assert results["model"]["step"] == step and results["model"]["model_dir"] == str(kept)
        assert results["world_size"] == 2 and results["tasks"]["humaneval"]["samples"] == 2

    proc = phi("eval", "curve", str(run))
    curve = json.loads((run / "eval" / "curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [10, 20]
    assert all(p["val_loss"] is not None and "humaneval" in p["pass_at_1"] for p in curve["points"])
    png = (run / "eval" / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "humaneval pass@1" in proc.stdout


def test_eval_chain_runs_with_the_jobs_offline_because_submit_fetched_everything(
    slurm_cluster, tiny_data, tmp_path, humaneval_path, mbpp_path
):
    """Issue 10, acceptance 5: MBPP is served by a local server only while `submit` runs; the jobs see
    HF_HUB_OFFLINE=1 and an MBPP URL that no longer answers, and still pass on the cached files."""
    from tests.test_downloads import FileServer

    server = FileServer()
    server.files["/mbpp/mbpp.jsonl"] = mbpp_path.read_bytes()
    cache = tmp_path / "xdg-cache"
    env = {
        "HF_HUB_OFFLINE": "1",
        "PHI_HPC_MBPP_URL": server.url + "/mbpp",
        "XDG_CACHE_HOME": str(cache),
        "PHI_HPC_CACHE_DIR": "",
    }  # (empty: unset, so XDG_CACHE_HOME decides; phi_hpc.paths.cache_root)
    run = tmp_path / "run"
    eval_args = (
        f"--task humaneval,mbpp --data humaneval={humaneval_path} --limit 2 --max-new-tokens 16 "
        "--batch-size 2 --workers 1"
    )
    try:
        phi(
            *tiny_pretrain_args(
                run,
                tiny_data,
                "--cluster",
                "slurm",
                "--set",
                "steps=10",
                "--eval-every",
                "10",
                "--eval-args",
                eval_args,
            ),
            env=env,
        )
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()  # from now on the MBPP URL refuses connections
    cached = cache / "phi-hpc" / "mbpp" / "mbpp.jsonl"
    assert cached.is_file()  # fetched at submit, before anything was queued
    rows = wait_for(run, ["train", "eval-step-10"], timeout=600)
    record = json.loads((run / "run.json").read_text())  # the training job submitted eval-step-10
    argv = next(job["argv"] for job in record["jobs"] if job["name"] == "eval-step-10")
    assert f"mbpp={cached}" in argv  # the job was handed the cached file, fetched at submit
    assert all(rows[name]["state"] == "COMPLETED" for name in ("train", "eval-step-10")), (rows, debug_logs(run))
    results = json.loads((run / "eval" / "step-10" / "results.json").read_text())
    assert results["tasks"]["mbpp"]["samples"] == 2 and results["tasks"]["humaneval"]["samples"] == 2
