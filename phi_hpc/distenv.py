"""Who am I in the job? Rank, local rank, world size, node rank and the rendezvous, in one place.

Every stage asks this module (the submitit task wrapper, the trainer, ``eval run``, the prepare array):
torch.distributed and DeepSpeed want ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; launchers describe the same facts in their own words. In order of precedence:

1. ``torchrun`` (``TORCHELASTIC_RUN_ID``) or a user/wrapper that exported ``RANK`` and ``WORLD_SIZE``:
   taken as given; a missing rendezvous is derived from Slurm inside a Slurm job.
2. A task of an ``srun`` step (``SLURM_PROCID`` with a step id): ``SLURM_PROCID``/``SLURM_LOCALID``/
   ``SLURM_NODEID``, the first host of the node list, a port derived from the job id. Not the batch
   script itself, which is one process even when the job asked for many tasks.
3. A task of submitit's local executor (``SUBMITIT_LOCAL_GLOBALID``): processes on this machine.
4. Otherwise one process on 127.0.0.1.

Every task computes the same rendezvous without talking to the others: the first host of the node list
and ``port_for_job`` (two jobs sharing a node get different ports; a requeued job keeps its id and so its
port). ``submitit.helpers.TorchDistributedEnvironment`` does part of this, but it reads only
``os.environ`` inside a submitit job, does not know torchrun, the batch step or the local executor, and
draws a random port; so this module is the one implementation, and its node-list parser is checked
against submitit's in the tests. Nothing here imports torch: login-node commands may use it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from phi_hpc.errors import PhiError

PORT_BASE = 20000
PORT_SPAN = 10000
LOOPBACK = "127.0.0.1"

# "torchrun": its agent started us; "env": someone exported RANK & co. (a wrapper, a user, or
# phi-hpc's own task wrapper); "slurm": derived from an srun step; "local": submitit's local
# executor; "single": one process.
Source = Literal["torchrun", "env", "slurm", "local", "single"]
_NOT_A_TASK_STEP = ("batch", "extern", "interactive", "4294967294", "4294967295", "4294967291")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    source: Source
    job_id: str = ""  # "<array job id>_<index>" for an array element: the name its logs go under
    restarts: int = 0  # how many times Slurm has requeued this job (SLURM_RESTART_COUNT)

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.local_rank and 0 <= self.node_rank):
            raise PhiError(
                f"rank {self.rank} (local {self.local_rank}, node {self.node_rank}) does not fit "
                f"world size {self.world_size} ({self.source} variables)",
                "check the launcher's RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS",
            )
        if not 0 < self.master_port < 65536:
            raise PhiError(f"MASTER_PORT {self.master_port} is not a TCP port", "set MASTER_PORT to 1024-65535")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def torch_variables(self) -> dict[str, str]:
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "NODE_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def export(self, environ: dict | None = None) -> None:
        """Write the torch.distributed variables (what ``init_process_group(env://)`` reads)."""
        (os.environ if environ is None else environ).update(self.torch_variables())


# ------------------------------------------------------------------------------------ rendezvous
def port_for_job(job_id: str | int) -> int:
    """A port in 20000-29999 that every task of a job agrees on without talking to the others.

    Takes Slurm's numeric job id (unique per array element too) or the ``ARRAY_INDEX`` form, where the
    index is added to the array id, so that elements of one array running side by side differ.
    """
    base, _, index = str(job_id).partition("_")
    number = int(re.sub(r"\D", "", base) or "0") + int(re.sub(r"\D", "", index) or "0")
    return PORT_BASE + number % PORT_SPAN


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list -> host names, in order (``a[1-2,5],b`` -> a1 a2 a5 b).

    Handles zero padding (``gpu[008-010]``), several bracket groups per name (``r[1-2]n[1-2]`` ->
    r1n1 r1n2 r2n1 r2n2) and commas inside and between groups. Expanded here rather than with
    ``scontrol show hostnames`` so it works in containers without Slurm's client tools.
    """
    hosts: list[str] = []
    for item in _split_top_level(nodelist):
        hosts.extend(_expand_item(item, nodelist))
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items, depth, current = [], 0, ""
    for char in nodelist.strip():
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise PhiError(
                f"cannot parse the Slurm node list {nodelist!r}: unbalanced brackets", "set MASTER_ADDR explicitly"
            )
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise PhiError(f"cannot parse the Slurm node list {nodelist!r}: unclosed '['", "set MASTER_ADDR explicitly")
    return [item for item in items + [current] if item]


def _expand_item(item: str, nodelist: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    prefix, suffix = item[: match.start()], item[match.end() :]
    expanded = []
    for part in match.group(1).split(","):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not bounds or int(bounds.group(2) or bounds.group(1)) < int(bounds.group(1)):
            raise PhiError(
                f"cannot parse the Slurm node list {nodelist!r}: bad range {part!r}", "set MASTER_ADDR explicitly"
            )
        low, high = bounds.group(1), bounds.group(2) or bounds.group(1)
        for number in range(int(low), int(high) + 1):
            expanded.extend(_expand_item(f"{prefix}{number:0{len(low)}d}{suffix}", nodelist))
    return expanded


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------ detection
def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """This process's place in the job (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    try:
        return _detect(env)
    except ValueError as exc:  # int("") or int("x") of a launcher variable
        names = "RANK, WORLD_SIZE, LOCAL_RANK, NODE_RANK, MASTER_PORT, SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID"
        raise PhiError(f"a launcher variable is not a number ({exc})", f"check {names}") from None


def _detect(env: Mapping[str, str]) -> DistEnv:
    if "RANK" in env and "WORLD_SIZE" in env:
        return _from_torch_variables(env)
    if _inside_slurm_step(env):
        return _from_slurm_step(env)
    if "SUBMITIT_LOCAL_GLOBALID" in env:
        return _from_submitit_local(env)
    return DistEnv(
        rank=0,
        local_rank=0,
        world_size=1,
        node_rank=0,
        master_addr=LOOPBACK,
        master_port=int(env.get("MASTER_PORT") or _free_port()),
        source="single",
        job_id=_job_name(env),
    )


def _from_torch_variables(env: Mapping[str, str]) -> DistEnv:
    in_slurm_job = bool(_slurm_job_id(env))
    return DistEnv(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK") or env.get("SLURM_LOCALID") or "0"),
        node_rank=int(env.get("NODE_RANK") or env.get("GROUP_RANK") or env.get("SLURM_NODEID") or "0"),
        master_addr=env.get("MASTER_ADDR") or (_slurm_master_addr(env) if in_slurm_job else LOOPBACK),
        master_port=int(env.get("MASTER_PORT") or (port_for_job(_slurm_job_id(env)) if in_slurm_job else 29500)),
        source="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
        job_id=_job_name(env),
        restarts=_int(env.get("SLURM_RESTART_COUNT")),
    )


def _from_slurm_step(env: Mapping[str, str]) -> DistEnv:
    return DistEnv(
        rank=int(env["SLURM_PROCID"]),
        world_size=int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]),
        local_rank=int(env.get("SLURM_LOCALID") or "0"),
        node_rank=int(env.get("SLURM_NODEID") or "0"),
        master_addr=env.get("MASTER_ADDR") or _slurm_master_addr(env),
        master_port=int(env.get("MASTER_PORT") or port_for_job(_slurm_job_id(env) or "0")),
        source="slurm",
        job_id=_job_name(env),
        restarts=_int(env.get("SLURM_RESTART_COUNT")),
    )


def _from_submitit_local(env: Mapping[str, str]) -> DistEnv:
    job_id = env.get("SUBMITIT_LOCAL_JOB_ID", "0")
    return DistEnv(
        rank=int(env["SUBMITIT_LOCAL_GLOBALID"]),
        local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID") or "0"),
        world_size=int(env.get("SUBMITIT_LOCAL_NTASKS") or "1"),
        node_rank=0,
        master_addr=LOOPBACK,
        master_port=int(env.get("MASTER_PORT") or port_for_job(job_id)),
        source="local",
        job_id=job_id,
        restarts=_int(env.get("PHI_HPC_LOCAL_RESTARTS")),
    )


def _inside_slurm_step(env: Mapping[str, str]) -> bool:
    """True in a task started by ``srun`` (not in the batch script, not in submitit's local executor)."""
    if env.get("SUBMITIT_EXECUTOR", "slurm") != "slurm":
        return False
    if "SLURM_PROCID" not in env or not ("SLURM_NTASKS" in env or "SLURM_STEP_NUM_TASKS" in env):
        return False
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    return step is not None and step not in _NOT_A_TASK_STEP


def _slurm_job_id(env: Mapping[str, str]) -> str:
    return env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or ""


def _slurm_master_addr(env: Mapping[str, str]) -> str:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    hosts = expand_nodelist(nodelist) if nodelist else []
    return hosts[0] if hosts else LOOPBACK


def _job_name(env: Mapping[str, str]) -> str:
    """What logs are filed under: ``ARRAY_INDEX`` for an array element, else the job id."""
    array_id, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and index:
        return f"{array_id}_{index}"
    return _slurm_job_id(env) or env.get("SUBMITIT_LOCAL_JOB_ID", "")


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0
