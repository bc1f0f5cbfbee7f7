"""Checkpoints that survive being killed at any instant, and the resume that trusts them.

Layout of ``RUN/checkpoints/``::

    <step>/config.json, model.safetensors   consolidated model, Hugging Face PhiForCausalLM layout
                                            (so ``eval --checkpoint RUN/checkpoints/<step>`` and
                                            transformers load the step folder itself)
    <step>/deepspeed/                       DeepSpeed engine state: module, optimizer (ZeRO shards),
                                            LR scheduler
    <step>/rng/rank-<r>.pt                  each rank's torch RNG state (dropout continues exactly)
    <step>/trainer_state.json               step, data-sampler position, world size (written last)
    latest                                  one line: the name of the newest complete step folder

Atomicity: every rank writes into ``.partial-<step>/``; after a barrier rank 0 renames it to
``<step>/`` (one atomic rename) and only then rewrites ``latest`` (atomically, via a temporary file).
A job killed at any point therefore leaves either the previous checkpoint as ``latest`` plus some
garbage named ``.partial-*`` (removed at the next start), or the new one complete. Old step folders
beyond ``keep_last`` are deleted only after ``latest`` has moved past them, except milestones
(multiples of ``keep_every``, e.g. phi-1-base's step 24000). The names are
:mod:`phi_hpc.run_layout`'s (:class:`~phi_hpc.run_layout.CheckpointFolder`), where readers find them too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from phi_hpc.fileio import atomic_write, write_json
from phi_hpc.run_layout import STATE_FILE, CheckpointFolder

DEEPSPEED_TAG = "deepspeed"

# ``on_publish(step, step_dir)``: called on rank 0 right after a checkpoint is published and before
# older ones are pruned, the one moment a folder is certain to exist in full. The launch layer passes
# one to keep the checkpoints that ``--eval-every`` evaluations read after pruning
# (phi_hpc.launch.snapshots); polling for them could miss a step pruned between two polls.
OnPublish = Callable[[int, Path], None]


class PreemptionFlag:
    """Set by SIGUSR2/SIGTERM; read (and agreed on by all ranks) at step boundaries."""

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


class SaveClock:
    """When a time-based checkpoint is due: ``every_minutes`` after the start or the last save.

    The clock is injected (``time.monotonic`` by default) so tests can move time by hand. Only rank
    0's answer counts (the trainer shares it in the step's all-reduce): clocks of different nodes
    would otherwise let ranks disagree on whether to save, and a save is a collective.
    """

    def __init__(self, every_minutes: float, clock: Callable[[], float] | None = None):
        import time

        self.interval = every_minutes * 60.0
        self.clock = clock or time.monotonic
        self.last = self.clock()

    def due(self) -> bool:
        return self.interval > 0 and self.clock() - self.last >= self.interval

    def saved(self) -> None:
        """Any save (step-based, time-based, preemption) restarts the interval."""
        self.last = self.clock()


def fault_step(kind: str) -> int | None:
    """Deliberate crash points for the resume tests: ``PHI_HPC_FAULT=<kind>:<step>``.

    ``kill-at-step`` (after that step's update) and ``kill-in-checkpoint`` (state written, not yet
    published). Each rank SIGKILLs itself: no handler, no cleanup, like a node losing power.
    ``sleep-per-step:<seconds>`` is not a crash: every step takes that much longer (a slow trainer).
    """
    spec = os.environ.get("PHI_HPC_FAULT", "")
    name, _, step = spec.partition(":")
    return int(step) if name == kind and step.isdigit() else None


def die_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def write_consolidated_model(module, directory: Path) -> None:
    """The step folder's Hugging Face view of the model (what eval and transformers load)."""
    from phi_hpc.model.hf import save_pretrained

    save_pretrained(module, directory)


_RANK_TOKEN = re.compile(r"rank[_-]?(\d+)")


def _fsync_own_files(root: Path, rank: int) -> None:
    """fsync the files this rank wrote: the first ``rank_<r>``/``rank-<r>`` of the name is the writer
    (``zero_pp_rank_1_mp_rank_00_optim_states.pt`` -> 1, ``rng/rank-1.pt`` -> 1); rank 0 also syncs
    names without one (the model states, the consolidated model).

    On Lustre/NFS an fsync flushes only the calling client's dirty pages, so rank 0 fsyncing another
    node's shards proves nothing: each rank makes its own files durable before the barrier that
    precedes publication (the state file, written last by rank 0, is fsynced by ``write_json``).
    """
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        owner = _RANK_TOKEN.search(path.name)
        if (int(owner.group(1)) if owner else 0) == rank:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


class CheckpointManager:
    """Save, publish, prune and find checkpoints of one run; every method is called on every rank."""

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int,
        rank: int,
        world_size: int,
        barrier: Callable[[], None],
        keep_every: int = 0,
        on_publish: OnPublish | None = None,
    ):
        self.folder = CheckpointFolder(Path(directory))
        self.directory = self.folder.directory
        self.on_publish = on_publish
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier

    # ---------------------------------------------------------------- finding
    def step_dir(self, step: int) -> Path:
        return self.folder.step_dir(step)

    def complete_steps(self) -> list[int]:
        return self.folder.complete_steps()

    def latest(self) -> Path | None:
        return self.folder.latest()

    def remove_partials(self) -> None:
        """Leftovers of a save that was killed mid-write (rank 0; call before anyone saves)."""
        if self.rank == 0:
            for path in self.folder.partials():
                shutil.rmtree(path, ignore_errors=True)
        self.barrier()

    # ---------------------------------------------------------------- saving
    def save(self, step: int, engine, trainer_state: dict, save_model: bool) -> Path:
        import torch

        partial = self.folder.partial_dir(step)
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        self.barrier()
        engine.save_checkpoint(str(partial), tag=DEEPSPEED_TAG, save_latest=False)
        (partial / "rng").mkdir(exist_ok=True)
        torch.save(_rng_state(), partial / "rng" / f"rank-{self.rank}.pt")
        if self.rank == 0 and save_model:
            write_consolidated_model(engine.module, partial)
        if fault_step("kill-in-checkpoint") == step:
            die_now()
        _fsync_own_files(partial, self.rank)  # each rank its own files, before the barrier (issue 16)
        self.barrier()
        final = self.step_dir(step)
        if self.rank == 0:
            write_json(partial / STATE_FILE, {**trainer_state, "step": step, "world_size": self.world_size})
            if final.exists():  # a re-run of the same step after a resume: replace it whole
                shutil.rmtree(final)
            os.replace(partial, final)
            with atomic_write(self.folder.latest_pointer) as handle:
                handle.write(f"{step}\n")
            if self.on_publish is not None:
                self.on_publish(step, final)
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        """Delete all but the newest ``keep_last`` (milestones, multiples of ``keep_every``, stay)."""
        for old in self.complete_steps()[: -self.keep_last]:
            if not (self.keep_every and old % self.keep_every == 0):
                shutil.rmtree(self.step_dir(old), ignore_errors=True)

    # ---------------------------------------------------------------- loading
    def load(self, engine, step_dir: Path) -> dict:
        """Restore engine, optimizer, scheduler and this rank's RNG; return the trainer state."""
        import torch

        from phi_hpc.errors import PhiError

        state = json.loads((step_dir / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("zero_stage", 0) > 0 and state.get("world_size") != self.world_size:
            raise PhiError(
                f"{step_dir} holds ZeRO-{state['zero_stage']} optimizer shards of {state['world_size']} "
                f"processes; this job has {self.world_size}",
                f"resume with {state['world_size']} processes (DeepSpeed cannot re-partition them), "
                "or start a new run_dir with checkpoint.init_from pointing at this folder",
            )
        load_path, _ = engine.load_checkpoint(
            str(step_dir), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise PhiError(
                f"{step_dir}: DeepSpeed could not load its state", "delete that folder to resume from an older one"
            )
        rng_file = step_dir / "rng" / f"rank-{self.rank}.pt"
        if rng_file.is_file() and state.get("world_size") == self.world_size:
            _set_rng_state(torch.load(rng_file, weights_only=False))
        return state


def _rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
