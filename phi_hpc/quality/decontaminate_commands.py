"""CLI of decontamination: ``decontaminate`` (report documents that overlap HumanEval/MBPP).

Only click and the standard library at import time, like every command module; the checks
(:mod:`phi_hpc.quality.contamination_report`) load in the command body.
"""

from __future__ import annotations

import click

from phi_hpc.errors import UsageError
from phi_hpc.quality.command_io import iter_inputs, summarize


@click.command("decontaminate")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Report .jsonl: one line per flagged document (problem, method, reason); beside it "
    "OUTPUT.problems.jsonl (per benchmark problem) and OUTPUT.summary.json.",
)
@click.option(
    "--benchmark-data", type=click.Path(), help="Folder holding HumanEval.jsonl.gz / mbpp.jsonl / sanitized-mbpp.json."
)
@click.option("--ngram", default=13, show_default=True, help="N-gram length of the overlap check.")
@click.option("--ast-threshold", default=0.9, show_default=True, help="tau: normalized-AST similarity that flags.")
@click.option("--ast-min-tokens", type=int, help="Smallest solution (AST tokens) compared structurally [28].")
@click.option(
    "--prefilter-containment",
    type=float,
    help="Skeleton-shingle share the lexical pre-filter needs (default: follows tau, 0.3 at 0.9).",
)
@click.option("--embedding-threshold", type=float, help="Also flag by embedding cosine >= this (off by default).")
@click.option("--embedding-model", type=click.Path(), help="LM folder for the embedding check (default: hashed).")
@click.option("--embedding-tokenizer", type=click.Path(dir_okay=False), help="tokenizer.json of --embedding-model.")
@click.option("--sweep", help="Also count flags at each of these tau, e.g. 0.95,0.9,0.85,0.8 (one pass).")
@click.option(
    "--write-clean",
    type=click.Path(dir_okay=False),
    help="Write the documents not flagged at --ast-threshold here (.jsonl: text, origin).",
)
@click.option("--glob", default="**/*.py", show_default=True, help="Files of an input folder to read.")
@click.option("--text-key", default="text", show_default=True, help="Text field of .jsonl/.parquet inputs.")
def decontaminate_command(
    inputs,
    output,
    benchmark_data,
    ngram,
    ast_threshold,
    ast_min_tokens,
    prefilter_containment,
    embedding_threshold,
    embedding_model,
    embedding_tokenizer,
    sweep,
    write_clean,
    glob,
    text_key,
):
    """Report documents that overlap HumanEval/MBPP (13-grams, renamed/edited code, embeddings).

    \b
    Writes the flagged documents, a per-problem contamination table (OUTPUT.problems.jsonl; feed it
    to `eval score --exclude` to score on the uncontaminated problems), with --sweep the flags per
    tau, and with --write-clean a cleaned copy of the inputs. `prepare --decontaminate` runs the same
    checks as a filter (thresholds: --set decontamination.ast_threshold=... etc.).
    """
    from phi_hpc.quality.contamination_report import parse_sweep, run_report
    from phi_hpc.quality.decontamination_config import DecontaminationConfig

    taus = parse_sweep(sweep)
    settings = {
        "ngram": ngram,
        "ast_threshold": ast_threshold,
        "ast_min_tokens": ast_min_tokens,
        "skeleton_containment": prefilter_containment,
        "embedding_threshold": embedding_threshold,
        "embedding_model": embedding_model,
        "embedding_tokenizer": embedding_tokenizer,
    }
    try:
        config = DecontaminationConfig(**{k: v for k, v in settings.items() if v is not None})
    except ValueError as exc:
        raise UsageError(f"decontaminate: {exc}") from None
    if embedding_model and embedding_threshold is None:
        raise UsageError("--embedding-model needs --embedding-threshold", "e.g. --embedding-threshold 0.95")
    bad: list = []
    summary = run_report(iter_inputs(inputs, glob, text_key, bad), config, benchmark_data, taus, output, write_clean)
    summary["bad_inputs"] = [b.to_dict() for b in bad]
    summarize(
        "decontaminate",
        summary,
        f"{output}.summary.json",
        ["documents", "flagged", "by_method", "problems_contaminated", "clean_written"],
    )
    if taus:
        from phi_hpc.progress import stderr_console

        for row in summary["sweep"]:
            stderr_console.print(
                f"tau {row['tau']:.2f}: {row['documents_flagged']} documents flagged "
                f"({row['share']:.2%}), {row['problems_contaminated']} problems contaminated"
            )
