"""benchmarks/gpu_check.py on a machine without a GPU: says so, runs the CPU stages, exits 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.model.test_loss_compile import REPO


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the no-GPU behaviour; a GPU runs the real stages")
def test_gpu_check_without_a_gpu_reports_what_it_skipped(tmp_path):
    report = tmp_path / "gpu.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--output",
            str(report),
            "--stages",
            "environment,model,deepspeed-fp16",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(proc.stdout)
    assert document["gpu"] is None and "no GPU visible" in proc.stderr
    stages = document["stages"]
    assert set(stages) == {
        "environment",
        "attention",
        "model",
        "deepspeed-bf16",
        "deepspeed-fp16",
        "resume",
        "generate",
    }
    assert stages["environment"]["status"] == "ok" and stages["environment"]["versions"]["cuda"] is None
    assert stages["model"]["status"] == "ok" and "max |logit diff|" in stages["model"]["summary"]
    assert stages["deepspeed-fp16"]["status"] == "skipped" and "GPU only" in stages["deepspeed-fp16"]["summary"]
    assert stages["attention"]["status"] == "skipped"  # not requested here
    assert document["failed"] == []
    text = report.read_text()
    assert "No GPU was available" in text and "no\nGPU claim is made" in text
    assert json.loads(text.split("```json\n")[1].split("```")[0]) == document
