"""``prepare`` as resumable stages, one module each, and :func:`prepare`, which runs them all here.

* **plan** (:mod:`phi_hpc.data.plan`): shards of about ``shard_mb``, the tokenizer, the filter
  source and the run's fingerprint; every stage plans again and gets the same run.
* **map** (:mod:`phi_hpc.data.map_stage`, one input shard; shards are independent, so they run in
  parallel, :mod:`phi_hpc.data.executor`, or as a Slurm array): read documents, compute content
  digests and MinHash signatures, run the optional document filters (:mod:`phi_hpc.data.filters`),
  tokenize the filters' survivors. Writes ``.work/RUN/map/shard-NNNNN.*``, the summary last.
* **reduce** (:mod:`phi_hpc.data.reduce`, needs every shard): exact + near-duplicate clustering over
  all documents' LSH band keys, streamed a band at a time; writes the keep mask, ``audit.jsonl`` and
  ``bad_inputs.jsonl``.
* **pack** (:mod:`phi_hpc.data.pack`): seeded document-level train/validation split; copies kept
  documents' tokens into ``train``/``validation`` ``.bin``/``.idx``; writes ``manifest.json`` last.

Crash safety: every file is written under a temporary name and renamed when complete, and a stage
whose completion marker exists is skipped. Every stage's output is a pure function of the inputs,
the tokenizer and the config (never of ``--workers`` or timing), so a run killed at any point and
rerun produces byte-identical outputs. All of it is keyed by the run's fingerprint: change the
config, tokenizer or inputs and stale intermediate state is discarded, not reused.
"""

from __future__ import annotations

import shutil
import time

from phi_hpc.data.config import PrepareConfig
from phi_hpc.data.executor import effective_workers, map_all, start_pool, unfinished_shards
from phi_hpc.data.filters import FilterSource
from phi_hpc.data.pack import completed_manifest, run_pack
from phi_hpc.data.plan import RunContext, open_run
from phi_hpc.data.reduce import run_reduce
from phi_hpc.data.tokenize import DocumentEncoder
from phi_hpc.fileio import write_json


def prepare(config: PrepareConfig, show_progress: bool | None = None, filters: FilterSource | None = None) -> dict:
    """Run every stage (skipping finished work) and return the manifest. Also writes ``summary.json``.

    ``filters``: where the map stage gets its document filters (see :mod:`phi_hpc.data.filters`)."""
    started = time.perf_counter()
    context = open_run(config, filters)
    layout = context.layout
    timings: dict[str, float] = {}
    manifest = completed_manifest(layout, context.fingerprint)
    resumed = manifest is not None
    encoder = None
    if manifest is None:
        # Built here, before the pool forks, so that every worker inherits it ready to use.
        encoder = DocumentEncoder.cached(config.tokenizer, context.tokenizer.eos_id, config.tokenizer_backend)
        manifest = _run_stages(context, show_progress, timings)
    if not config.keep_work:
        shutil.rmtree(layout.all_work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    write_json(
        layout.summary,
        {
            "command": "prepare",
            "status": "already complete" if resumed else "completed",
            "seconds": round(elapsed, 3),
            "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
            "workers": effective_workers(config, len(context.shards)),
            "token_ids_by": encoder.backend if encoder is not None else None,
            "input_mb_per_s": round(manifest["counts"]["bytes_in"] / 1e6 / elapsed, 3) if elapsed > 0 else None,
            "counts": manifest["counts"],
            "outputs": manifest["outputs"],
            "manifest": str(layout.manifest),
        },
    )
    return manifest


def _run_stages(context: RunContext, show_progress: bool | None, timings: dict[str, float]) -> dict:
    """map, reduce and pack, each timed into ``timings``; returns the manifest."""
    from phi_hpc.progress import progress_bar

    todo = unfinished_shards(context)
    # The pool starts before the progress bar's refresh thread exists.
    pool = start_pool(context, effective_workers(context.config, len(todo))) if len(todo) > 1 else None
    try:
        with progress_bar(disable=None if show_progress is None else not show_progress) as progress:
            stage_start = time.perf_counter()
            map_all(context, progress, pool)
            timings["map"] = time.perf_counter() - stage_start
            stage_start = time.perf_counter()
            task = progress.add_task("reduce (dedup)", total=1)
            run_reduce(context)
            progress.advance(task)
            timings["reduce"] = time.perf_counter() - stage_start
            stage_start = time.perf_counter()
            manifest = run_pack(context, progress)
            timings["pack"] = time.perf_counter() - stage_start
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return manifest
