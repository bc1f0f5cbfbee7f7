"""Joining the job's process group: the accelerator, then torch.distributed through DeepSpeed.

Who this process is (rank, world size, rendezvous) comes from :mod:`phi_hpc.distenv`, the one place
that reads torchrun's, Slurm's, submitit's or a user's variables.

On a machine without CUDA the accelerator is DeepSpeed's CPU one and the backend gloo; this has to be
decided before ``deepspeed`` is first imported, hence :func:`select_accelerator`. A task that Slurm
gave GPUs which CUDA cannot see is an error, not a CPU run; the ranks compare their devices before the
first collective (:func:`agree_on_device`); the GPU of a task is its local rank modulo the GPUs it sees.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from phi_hpc.distenv import DistEnv
from phi_hpc.errors import PhiError

# Variables by which a launcher says "this task has GPUs" (Slurm's, then CUDA's own), and the values that
# mean none. Read by select_accelerator: a task that was given GPUs must not quietly train on the CPU.
GPU_GRANTS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")
NO_GPU_VALUES = ("", "-1", "none", "nodevfiles", "void")
DEVICE_VARIABLE = "PHI_HPC_DEVICE"  # auto (default) | cpu (train on the CPU on purpose) | cuda (insist)


def granted_gpus(environ: Mapping[str, str]) -> str | None:
    """``NAME=value`` of the first variable that gives this task GPUs, or None."""
    for name in GPU_GRANTS:
        value = environ.get(name, "").strip()
        if value.lower() in NO_GPU_VALUES or (name == "SLURM_GPUS_ON_NODE" and value == "0"):
            continue
        return f"{name}={value}"
    return None


def decide_device(requested: str, cuda_available: bool, cuda_build: str | None, grant: str | None) -> str:
    """'cuda' or 'cpu' for this process; an error where the choice would be a silent mistake.

    ``cuda_build`` is ``torch.version.cuda`` (None for a CPU-only torch). A task that the launcher
    gave GPUs and CUDA cannot see them (driver, device files, a bad CUDA_VISIBLE_DEVICES) would train
    about 1000x slower on the CPU, or hang when its peers chose NCCL: that is an error, unless the
    user asked for the CPU. A CPU-only torch cannot see any GPU by construction (the local test
    cluster's GPUs are fake): said once on stderr, then the CPU.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise PhiError(
            f"{DEVICE_VARIABLE}={requested!r} is not a device", f"set {DEVICE_VARIABLE} to auto, cpu or cuda"
        )
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    if requested == "cuda" or (grant is not None and cuda_build is not None):
        reason = f"the launcher gave this task GPUs ({grant})" if grant else f"{DEVICE_VARIABLE}=cuda"
        raise PhiError(
            f"{reason} but CUDA sees none on {socket.gethostname()} (torch built for CUDA {cuda_build})",
            "check nvidia-smi and CUDA_VISIBLE_DEVICES on that node, "
            f"or set {DEVICE_VARIABLE}=cpu to train on the CPU on purpose",
        )
    if grant is not None:
        import sys

        print(
            f"[train] warning: the launcher gave this task GPUs ({grant}) but this torch is a CPU-only build: "
            f"training on the CPU (set {DEVICE_VARIABLE}=cpu to say so, or install a CUDA torch)",
            file=sys.stderr,
            flush=True,
        )
    return "cpu"


def select_accelerator(environ: Mapping[str, str] | None = None) -> str:
    """'cuda' or 'cpu' (see :func:`decide_device`), and tell DeepSpeed before it is imported."""
    import torch

    env = os.environ if environ is None else environ
    kind = decide_device(
        env.get(DEVICE_VARIABLE, "auto").strip().lower() or "auto",
        torch.cuda.is_available(),
        torch.version.cuda,
        granted_gpus(env),
    )
    if kind == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return kind


def cuda_ordinal(local_rank: int, visible: int) -> int:
    """The GPU of this task among those it sees: ``local_rank`` modulo their number.

    All 8 visible (one task per GPU, no binding): GPU ``local_rank``. ``--gpus-per-task=1`` or GPU
    binding: each task sees only its own GPU, always ordinal 0, whatever its local rank.
    """
    if visible < 1:
        raise PhiError("CUDA reports no visible GPU", "check CUDA_VISIBLE_DEVICES and nvidia-smi on this node")
    return local_rank % visible


def device_description(device_type: str) -> str:
    """What this rank will train on, as the ranks compare it: ``cuda:3 NVIDIA A100-SXM4-80GB on gpu007``."""
    host = socket.gethostname()
    if device_type != "cuda":
        return f"cpu on {host}"
    import torch

    index = torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)} on {host}"


def agree_on_device(store, rank: int, world_size: int, description: str, timeout_s: float = 600.0) -> None:
    """Every rank publishes its device in the rendezvous store and checks that all kinds are equal.

    Runs before any collective: ranks that chose NCCL and ranks that chose gloo would otherwise wait
    on each other until the process-group timeout (30 minutes) and then fail without saying why.
    """
    from datetime import timedelta

    if world_size == 1:
        return
    store.set(f"phi-hpc/device/{rank}", description)
    keys = [f"phi-hpc/device/{r}" for r in range(world_size)]
    store.wait(keys, timedelta(seconds=timeout_s))
    seen = [store.get(key).decode() for key in keys]
    kinds = {entry.split(":")[0].split(" ")[0] for entry in seen}
    if len(kinds) > 1:
        listing = ", ".join(f"rank {r}: {entry}" for r, entry in enumerate(seen))
        raise PhiError(
            f"the ranks disagree on the device ({listing})",
            "every node needs working GPUs (or set PHI_HPC_DEVICE=cpu on all of them)",
        )


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
    """Join the process group (NCCL on GPUs, gloo on CPUs), after the ranks agreed on the device.

    The process group is created here rather than by ``deepspeed.init_distributed``, which binds
    ``cuda:LOCAL_RANK`` (wrong under ``--gpus-per-task=1``); DeepSpeed then adopts it. A second, gloo
    group with a longer timeout serves :func:`wait_barrier`.
    """
    from datetime import timedelta

    import deepspeed
    import torch
    import torch.distributed as dist

    global _wait_group
    timeout_minutes = timeout_minutes or _minutes(COLLECTIVE_TIMEOUT_ENV, 30)
    env.export()
    timeout = timedelta(minutes=timeout_minutes)
    device_id = None
    if device_type == "cuda":
        torch.cuda.set_device(cuda_ordinal(env.local_rank, torch.cuda.device_count()))
        device_id = torch.device("cuda", torch.cuda.current_device()) if env.world_size > 1 else None
    elif "OMP_NUM_THREADS" not in os.environ and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        # srun does not limit torch's thread pool the way torchrun does: N tasks x all cores oversubscribes
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        # torchrun's agent store or a new one at MASTER_ADDR:MASTER_PORT, exactly as env:// would
        store, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size, timeout=timeout))
        agree_on_device(store, env.rank, env.world_size, device_description(device_type), timeout.total_seconds())
        dist.init_process_group(
            backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timeout, device_id=device_id
        )
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timeout)
    _wait_group = dist.new_group(backend="gloo", timeout=timedelta(minutes=_minutes(WAIT_TIMEOUT_ENV, 240)))
