"""The local executor of ``prepare``'s map stage: a pool of worker processes on this machine.

On Slurm each shard is an array element instead (:mod:`phi_hpc.launch.preparation`); here the
shards go to ``--workers`` processes, biggest first. Workers are forked where the platform can, and
each receives the planned run once, as the pool initializer's argument: a forked worker inherits
that :class:`~phi_hpc.data.plan.RunContext` (shards, loaded tokenizer description, filter source)
without pickling or planning again. It is read-only; each worker builds its own filters and
tokenizer from it. Which shard a worker maps never changes what is written, so the outputs do not
depend on the worker count.
"""

from __future__ import annotations

import multiprocessing
import os

from phi_hpc.data.map_stage import run_map
from phi_hpc.data.plan import RunContext
from phi_hpc.errors import PhiError


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def effective_workers(config, shards: int) -> int:
    """``--workers`` (default: one per available core), never more than there are shards."""
    requested = config.workers or available_cpus()
    return max(1, min(requested, shards))


def unfinished_shards(context: RunContext) -> list:
    return [s for s in context.shards if not context.layout.shard_done(s.index).is_file()]


def start_pool(context: RunContext, workers: int):
    """A pool of ``workers`` processes holding ``context``, or None for one worker (map runs here).

    Start it before any thread (the progress bar's refresh thread): forking with live threads is
    how deadlocks are made."""
    if workers <= 1:
        return None
    threads = max(1, available_cpus() // workers)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(threads, context))


# The run this worker process maps shards of: set once by _init_worker, in pool workers only.
_worker_context: RunContext | None = None


def _init_worker(threads: int, context: RunContext) -> None:
    global _worker_context
    _worker_context = context
    # Read by tokenizers when its thread pool first starts (it has not in this process yet):
    # workers x threads = cores.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


def _map_in_worker(shard_index: int):
    try:
        run_map(_worker_context, shard_index)
    except PhiError as exc:  # sent back as data: custom exceptions lose their fields when pickled
        return shard_index, (exc.message, exc.hint, exc.exit_code)
    return shard_index, None


def map_all(context: RunContext, progress=None, pool=None) -> None:
    """Run the map stage over every unfinished shard: in this process, or on ``pool`` if given."""
    todo = unfinished_shards(context)
    total = sum(s.bytes for s in context.shards)
    task = (
        progress.add_task("map (read, signatures, tokenize)", total=total, completed=total - sum(s.bytes for s in todo))
        if progress is not None
        else None
    )
    if pool is None:
        for shard in todo:
            run_map(context, shard.index)
            if task is not None:
                progress.advance(task, shard.bytes)
        return
    # Biggest shards first, so that one large file does not start last and run alone.
    ordered = sorted(todo, key=lambda s: (-s.bytes, s.index))
    for shard_index, error in pool.imap_unordered(_map_in_worker, [s.index for s in ordered]):
        if error is not None:
            pool.terminate()
            # Report what a sequential run would: the first bad input in input order. Earlier
            # shards either completed cleanly or raise their own error here.
            for shard in todo:
                if shard.index >= shard_index:
                    break
                if not context.layout.shard_done(shard.index).is_file():
                    run_map(context, shard.index)
            raise PhiError(error[0], error[1], error[2])
        if task is not None:
            progress.advance(task, context.shards[shard_index].bytes)
