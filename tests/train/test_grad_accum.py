"""Gradients of a step's micro-batches are summed in fp32 under bf16 (issue 11, point 1).

Measured through DeepSpeed itself on the CPU (bf16 runs there; fp16 does not): the gradient DeepSpeed
steps with after 16 micro-batches, against the same bf16 micro-batch gradients summed in fp32.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phi_hpc.errors import UsageError
from phi_hpc.train.config import BatchConfig, DeepSpeedConfig, TrainConfig
from phi_hpc.train.engine import deepspeed_config
from tests.train.conftest import REPO, child_env, free_port


@pytest.mark.slow
def test_deepspeed_bf16_accumulates_in_fp32():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train" / "accum_probe.py"), str(free_port())],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    report = json.loads(lines[-1][len("PROBE ") :])
    assert report["bf16_sum_error"] > 1e-3, "the probe must be able to tell a bf16 sum from an fp32 one"
    runs = {(r["zero_stage"], r["grad_accum_dtype"]): r for r in report["runs"]}
    for stage in (1, 2):
        run = runs[(stage, "fp32")]
        assert run["deepspeed_json"]["data_types"] == {"grad_accum_dtype": "fp32"}
        assert run["error"] < 1e-6, run  # the same numbers, summed in another order at most
    # asking for the model's precision really gives the 16-bit sum's error (the control)
    assert runs[(1, "model")]["error"] > 1e-3


def _config(stage: int, precision: str, accum: str = "fp32", micro: int = 2, global_size: int = 32) -> TrainConfig:
    return TrainConfig(
        batch=BatchConfig(global_size=global_size, micro_size=micro),
        deepspeed=DeepSpeedConfig(zero_stage=stage, precision=precision, grad_accum_dtype=accum),
    )


def test_grad_accum_dtype_in_the_deepspeed_json():
    assert deepspeed_config(_config(1, "fp16"), 1, "cuda")["data_types"] == {"grad_accum_dtype": "fp32"}
    assert deepspeed_config(_config(2, "bf16"), 1, "cuda")["communication_data_type"] == "fp32"
    assert "data_types" not in deepspeed_config(_config(0, "fp32"), 1, "cpu")
    assert deepspeed_config(_config(1, "bf16", "model"), 1, "cuda")["data_types"] == {"grad_accum_dtype": "bf16"}
    # without ZeRO DeepSpeed cannot accumulate in fp32: an error naming the fix, unless nothing accumulates
    with pytest.raises(UsageError, match="zero_stage=0 with precision bf16"):
        deepspeed_config(_config(0, "bf16"), 1, "cuda")
    assert "data_types" not in deepspeed_config(_config(0, "bf16", global_size=2), 1, "cuda")
