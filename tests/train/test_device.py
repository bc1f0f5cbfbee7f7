"""Which device a training rank uses (issue 11, points 4 and 5): never a silent CPU run on a GPU node."""

from __future__ import annotations

import subprocess
import sys

import pytest

from phi_hpc.errors import PhiError
from phi_hpc.train.distributed import cuda_ordinal, decide_device, granted_gpus
from tests.train.conftest import REPO, child_env, free_port


def test_granted_gpus_reads_slurm_then_cuda_variables():
    assert granted_gpus({}) is None
    assert granted_gpus({"SLURM_GPUS_ON_NODE": "0", "CUDA_VISIBLE_DEVICES": ""}) is None
    assert granted_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) is None
    assert granted_gpus({"SLURM_GPUS_ON_NODE": "8"}) == "SLURM_GPUS_ON_NODE=8"
    assert granted_gpus({"SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}) == "SLURM_STEP_GPUS=3"
    assert granted_gpus({"CUDA_VISIBLE_DEVICES": "0"}) == "CUDA_VISIBLE_DEVICES=0"  # GPU 0 is a GPU


def test_gpus_that_cuda_cannot_see_are_a_one_line_error():
    with pytest.raises(PhiError) as caught:
        decide_device("auto", cuda_available=False, cuda_build="13.0", grant="SLURM_GPUS_ON_NODE=8")
    message = str(caught.value)
    assert "\n" not in message and "SLURM_GPUS_ON_NODE=8" in message and "CUDA sees none" in message
    assert "PHI_HPC_DEVICE=cpu" in caught.value.hint
    with pytest.raises(PhiError, match="PHI_HPC_DEVICE=cuda"):
        decide_device("cuda", cuda_available=False, cuda_build="13.0", grant=None)
    with pytest.raises(PhiError, match="not a device"):
        decide_device("gpu", cuda_available=True, cuda_build="13.0", grant=None)


def test_device_choices_that_are_not_errors(capsys):
    assert decide_device("auto", True, "13.0", "SLURM_GPUS_ON_NODE=8") == "cuda"
    assert decide_device("auto", False, None, None) == "cpu"  # a laptop
    assert decide_device("cpu", False, "13.0", "SLURM_GPUS_ON_NODE=8") == "cpu"  # asked for
    assert capsys.readouterr().err == ""
    # a CPU-only torch on a node with (e.g. the test cluster's fake) GPUs: the CPU, but said out loud
    assert decide_device("auto", False, None, "SLURM_GPUS_ON_NODE=2") == "cpu"
    assert "CPU-only build" in capsys.readouterr().err


@pytest.mark.parametrize("local_rank, visible, ordinal", [(0, 8, 0), (5, 8, 5), (5, 1, 0), (7, 1, 0), (3, 2, 1)])
def test_device_ordinal_is_local_rank_modulo_visible_gpus(local_rank, visible, ordinal):
    assert cuda_ordinal(local_rank, visible) == ordinal


def test_no_visible_gpu_is_an_error():
    with pytest.raises(PhiError, match="no visible GPU"):
        cuda_ordinal(0, 0)


AGREE = """
import sys
from datetime import timedelta
import torch.distributed as dist
from phi_hpc.errors import PhiError
from phi_hpc.train.distributed import agree_on_device
rank, port, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0, timeout=timedelta(seconds=60))
try:
    agree_on_device(store, rank, 2, f"{kind} on host{rank}", timeout_s=60)
    print("AGREED")
except PhiError as error:
    print("ERROR " + str(error))
"""


def _agree(kinds: list[str]) -> list[str]:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGREE, str(rank), str(port), kind],
            env=child_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, kind in enumerate(kinds)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    return [out.strip().splitlines()[-1] for out, _ in outputs]


def test_ranks_that_disagree_on_the_device_all_fail_before_any_collective():
    lines = _agree(["cuda:0 NVIDIA A100", "cpu"])
    for line in lines:
        assert line.startswith("ERROR the ranks disagree on the device")
        assert "rank 0: cuda:0 NVIDIA A100 on host0" in line and "rank 1: cpu on host1" in line
    assert _agree(["cpu", "cpu"]) == ["AGREED", "AGREED"]
