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


# Two timeouts (issue 16): the process group's bounds every training collective, and a hung all-reduce
# should not hold 8 GPUs for long; waits that are legitimately long (a checkpoint written to a slow
# filesystem while the other ranks wait at a barrier) go through a separate gloo group with its own.
COLLECTIVE_TIMEOUT_ENV = "PHI_HPC_COLLECTIVE_TIMEOUT_MIN"  # default 30
WAIT_TIMEOUT_ENV = "PHI_HPC_WAIT_TIMEOUT_MIN"  # default 240
_wait_group = None


def _minutes(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number of minutes") from None


def wait_barrier() -> None:
    """A barrier for long waits that are not training collectives (checkpoint saves, start-up)."""
    import torch.distributed as dist

    dist.barrier(group=_wait_group)


def init_distributed(env: DistEnv, device_type: str, timeout_minutes: float | None = None) -> None:
    """Join the process group through DeepSpeed (NCCL on GPUs, gloo on CPUs), and the waiting group."""
    from datetime import timedelta

    import deepspeed
    import torch

    global _wait_group
    timeout_minutes = timeout_minutes or _minutes(COLLECTIVE_TIMEOUT_ENV, 30)

    env.export()
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
    elif "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        # srun does not limit torch's thread pool the way torchrun does: N tasks x all cores oversubscribes
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo",
                               auto_mpi_discovery=False, timeout=timedelta(minutes=timeout_minutes))
    _wait_group = torch.distributed.new_group(backend="gloo",
                                              timeout=timedelta(minutes=_minutes(WAIT_TIMEOUT_ENV, 240)))
