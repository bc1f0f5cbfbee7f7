"""Who am I in the job? One answer for torchrun, srun and a plain ``python`` process.

torch.distributed (and DeepSpeed) read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. torchrun exports them; ``srun`` does not, it exports ``SLURM_PROCID`` and friends,
and DeepSpeed then falls back to looking for MPI. So under Slurm we derive the torch variables from
Slurm's: the rendezvous host is the first node of the job (``scontrol show hostnames`` expands
``gpu[001-004]``), the port a function of the job id (the same on every node, different for two jobs
sharing a node). Without either, we are a single process on 127.0.0.1.

On a machine without CUDA the accelerator is DeepSpeed's CPU one and the backend gloo; this has to be
decided before ``deepspeed`` is first imported, hence :func:`select_accelerator`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Literal, Mapping

from phi_hpc.errors import PhiError

# "torchrun": its agent started us; "env": someone else exported RANK & co. (e.g. a submitit task that
# derived them from Slurm); "slurm": we derived them from an srun step; "single": one process.
Source = Literal["torchrun", "env", "slurm", "single"]


@dataclass(frozen=True)
class DistributedEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: Source

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def export(self, environ: dict | None = None) -> None:
        """Write the torch.distributed variables (what ``init_process_group(env://)`` reads)."""
        target = os.environ if environ is None else environ
        target.update({
            "RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank),
            "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
        })


def detect_environment(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """Read the launcher's variables: torch's own (torchrun, or exported by a wrapper) first, then Slurm's
    (inside an srun step), else one process."""
    env = os.environ if environ is None else environ
    in_slurm_job = "SLURM_JOB_ID" in env or "SLURM_JOBID" in env
    if "RANK" in env and "WORLD_SIZE" in env:
        # a wrapper may export the ranks but not the rendezvous: inside a Slurm job derive it as srun would
        return DistributedEnv(
            rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK") or env.get("SLURM_LOCALID") or "0"),
            master_addr=env.get("MASTER_ADDR") or (_slurm_master_addr(env) if in_slurm_job else "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT") or (_slurm_master_port(env) if in_slurm_job else 29500)),
            source="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env")
    if _inside_slurm_step(env):
        return DistributedEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR") or _slurm_master_addr(env),
            master_port=int(env.get("MASTER_PORT") or _slurm_master_port(env)),
            source="slurm")
    return DistributedEnv(rank=0, world_size=1, local_rank=0, master_addr="127.0.0.1",
                          master_port=int(env.get("MASTER_PORT") or _free_port()), source="single")


def _slurm_master_addr(env: Mapping[str, str]) -> str:
    return first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", ""))


def _slurm_master_port(env: Mapping[str, str]) -> int:
    return port_for_job(env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "0")


def _inside_slurm_step(env: Mapping[str, str]) -> bool:
    """True in a task started by ``srun`` (not in the batch script itself, which is one process even
    when the job asked for many tasks)."""
    if "SLURM_PROCID" not in env or not ("SLURM_NTASKS" in env or "SLURM_STEP_NUM_TASKS" in env):
        return False
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    return step is not None and step not in ("batch", "extern", "4294967294", "4294967295")


def port_for_job(job_id: str | int) -> int:
    """A port in 20000-29999 that every task of a job agrees on without talking to each other."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return 20000 + int(digits) % 10000


def first_host(nodelist: str) -> str:
    """The first hostname of a Slurm node list (``node[01-04],gpu7`` -> ``node01``)."""
    if not nodelist:
        return "127.0.0.1"
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    return _expand_first(nodelist)


def _expand_first(nodelist: str) -> str:
    """Fallback when scontrol is unavailable: enough of Slurm's hostlist syntax to find the first host."""
    head = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise PhiError(f"cannot parse SLURM node list {nodelist!r}", "set MASTER_ADDR explicitly")
    prefix, _, ranges = head.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def select_accelerator() -> str:
    """'cuda' when a GPU is visible, else 'cpu' (and tell DeepSpeed so before it is imported)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return "cpu"


def init_distributed(env: DistributedEnv, device_type: str, timeout_minutes: int = 30) -> None:
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
