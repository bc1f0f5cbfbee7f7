"""The torch.distributed variables of one task, derived from what Slurm (or submitit) tells it.

``srun`` gives every task ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS`` and the job's node
list; torch.distributed and DeepSpeed want ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``. Every task computes the same rendezvous point without talking to the others:
the first host of the node list, and a port derived from the job id (two jobs sharing a node get
different ports; a requeued job keeps its id and therefore its port).

The node list is expanded here in Python (``gpu[001-003,010],login2``) rather than with
``scontrol show hostnames``, so it works in containers without Slurm's client tools.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

PORT_BASE = 20000
PORT_SPAN = 10000


@dataclass(frozen=True)
class TaskEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    job_id: str     # "<array id>_<index>" for an array element: the name its logs go under
    restarts: int  # how many times Slurm has requeued this job (SLURM_RESTART_COUNT)

    def torch_variables(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}

    def export(self) -> None:
        os.environ.update(self.torch_variables())


def port_for_job(job_id: str) -> int:
    """A port every task of a job agrees on: 20000 + (numeric job id mod 10000)."""
    digits = re.sub(r"\D", "", job_id.split("_")[0]) or "0"
    return PORT_BASE + int(digits) % PORT_SPAN


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list -> host names, in order (``a[1-2,5],b`` -> a1 a2 a5 b).

    Handles zero padding (``gpu[008-010]``) and several bracket groups per name (``r[1-2]n[1-2]``).
    """
    hosts: list[str] = []
    for item in _split_top_level(nodelist):
        hosts.extend(_expand_item(item))
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items, depth, current = [], 0, ""
    for char in nodelist.strip():
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    if current:
        items.append(current)
    return [item for item in items if item]


def _expand_item(item: str) -> list[str]:
    match = re.search(r"\[([^\]]+)\]", item)
    if not match:
        return [item]
    prefix, suffix = item[:match.start()], item[match.end():]
    expanded = []
    for part in match.group(1).split(","):
        low, _, high = part.partition("-")
        width = len(low)
        for number in range(int(low), int(high or low) + 1):
            expanded.extend(_expand_item(f"{prefix}{number:0{width}d}{suffix}"))
    return expanded


def slurm_task_env(environ: Mapping[str, str]) -> TaskEnv:
    """Inside an srun task of a batch job (``SLURM_PROCID`` is set)."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or "127.0.0.1"
    job_id = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID") or "0"
    world_size = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    array_id, array_index = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    name = f"{array_id}_{array_index}" if array_id and array_index else job_id
    return TaskEnv(rank=int(environ["SLURM_PROCID"]), local_rank=int(environ.get("SLURM_LOCALID", "0")),
                   world_size=int(world_size), master_addr=expand_nodelist(nodelist)[0],
                   master_port=port_for_job(job_id), job_id=name,
                   restarts=int(environ.get("SLURM_RESTART_COUNT", "0") or 0))


def submitit_local_env(environ: Mapping[str, str]) -> TaskEnv:
    """Inside a task of submitit's local executor (processes on this machine, no Slurm)."""
    job_id = environ.get("SUBMITIT_LOCAL_JOB_ID", "0")
    return TaskEnv(rank=int(environ.get("SUBMITIT_LOCAL_GLOBALID", "0")),
                   local_rank=int(environ.get("SUBMITIT_LOCAL_LOCALID", "0")),
                   world_size=int(environ.get("SUBMITIT_LOCAL_NTASKS", "1")), master_addr="127.0.0.1",
                   master_port=port_for_job(job_id), job_id=job_id,
                   restarts=int(environ.get("PHI_HPC_LOCAL_RESTARTS", "0")))


def current_task_env(environ: Mapping[str, str] | None = None) -> TaskEnv:
    environ = os.environ if environ is None else environ
    if "SLURM_PROCID" in environ and environ.get("SUBMITIT_EXECUTOR", "slurm") == "slurm":
        return slurm_task_env(environ)
    return submitit_local_env(environ)
