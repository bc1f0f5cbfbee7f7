"""Joining the job's process group: the accelerator, then torch.distributed through DeepSpeed.

Who this process is (rank, world size, rendezvous) comes from :mod:`phi_hpc.distenv`, the one place
that reads torchrun's, Slurm's, submitit's or a user's variables.

On a machine without CUDA the accelerator is DeepSpeed's CPU one and the backend gloo; this has to be
decided before ``deepspeed`` is first imported, hence :func:`select_accelerator`.
"""

from __future__ import annotations

import os

from phi_hpc.distenv import DistEnv


def select_accelerator() -> str:
    """'cuda' when a GPU is visible, else 'cpu' (and tell DeepSpeed so before it is imported)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return "cpu"


def init_distributed(env: DistEnv, device_type: str, timeout_minutes: int = 30) -> None:
    """Join the process group through DeepSpeed (NCCL on GPUs, gloo on CPUs)."""
    from datetime import timedelta

    import deepspeed
    import torch

    env.export()
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
    elif "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        # srun does not limit torch's thread pool the way torchrun does: N tasks x all cores oversubscribes
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo",
                               auto_mpi_discovery=False, timeout=timedelta(minutes=timeout_minutes))
