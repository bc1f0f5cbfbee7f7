"""CLI of the data area: ``prepare``, ``tokenizer train``, ``inspect``.

Only click and the standard library at import time: the heavy lifting (numpy, tokenizers, pyarrow)
is imported inside the command bodies, so ``phi-hpc --help`` stays instant on a login node.
"""

from __future__ import annotations

import dataclasses
import json

import click

from phi_hpc.cli_options import config_options
from phi_hpc.errors import UsageError


@click.command("prepare")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--tokenizer", help="tokenizer.json, a tokenizer folder, or a Hugging Face hub id (microsoft/phi-1).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--workers", type=int, help="Parallel map processes (default: one per available core).")
@click.option("--strict/--no-strict", default=None, help="Make the first bad input an error (exit 2).")
@click.option(
    "--stage",
    type=click.Choice(["all", "plan", "map", "reduce", "pack"]),
    default="all",
    show_default=True,
    help="Run one stage only: `plan` prints the shard count (the Slurm array size), then a Slurm "
    "array runs `--stage map --shard $SLURM_ARRAY_TASK_ID`, then reduce, then pack.",
)
@click.option("--shard", type=int, help="With --stage map: the one shard to process.")
@click.option("--max-documents", type=int, help="Keep only the first N good documents (demos, tests).")
@click.option("--quality-model", help="Drop documents the quality classifier scores below the threshold.")
@click.option(
    "--quality-scores",
    type=click.Path(file_okay=False),
    help="Filter on the scores `phi-hpc quality score` wrote to this folder (no embedding here).",
)
@click.option("--quality-threshold", type=float, help="Quality probability a document needs to be kept.")
@click.option("--decontaminate", is_flag=True, default=None, help="Drop documents overlapping HumanEval/MBPP.")
@click.option(
    "--decontaminate-report-only",
    is_flag=True,
    default=None,
    help="Run decontamination but only list overlaps in the audit; keep the documents.",
)
@click.option("--benchmark-data", type=click.Path(), help="Folder with the benchmark files for --decontaminate.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (or stage summary) as JSON on stdout.")
@config_options
def prepare_command(stage, shard, as_json, **options):
    """Deduplicate and tokenize code into Megatron .bin/.idx files plus OUT/manifest.json.

    \b
    INPUT: .jsonl/.jsonl.gz/.jsonl.zst, .parquet, or folders of source files (--set glob='**/*.py').
    Exact + MinHash-LSH near dedup (5-gram words, 256 permutations, Jaccard 0.85), tokenization
    with EOS after each document, seeded train/validation split. Token ids of a byte-level BPE
    (phi-1's, GPT-2's) come from tiktoken, the same ids as tokenizers at a third of the CPU
    (--set tokenizer_backend=tokenizers to use tokenizers). Resumable: rerun the same command
    after a crash and finished work is skipped; results are identical to an uninterrupted run.
    Text is stored exactly as read (no normalization): decoding a document's tokens gives it back.
    Removed documents are listed in OUT/audit.jsonl, unreadable inputs in OUT/bad_inputs.jsonl.
    """
    config = prepare_config(options)
    if not config.tokenizer:
        raise UsageError(
            "no tokenizer given", "pass --tokenizer tokenizer.json (or build one: phi-hpc tokenizer train)"
        )
    if shard is not None and stage != "map":
        raise UsageError("--shard only applies to --stage map")

    from phi_hpc.data import report
    from phi_hpc.data.plan import open_run
    from phi_hpc.quality.stages import PrepareFilters  # the one place quality's filters plug into prepare

    if stage == "all":
        from phi_hpc.data.pipeline import prepare

        manifest = prepare(config, filters=PrepareFilters())
        report.print_summary(manifest, config.output_dir)
        if as_json:
            click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    context = open_run(config, PrepareFilters())
    if stage == "plan":
        result = {
            "stage": "plan",
            "shards": len(context.shards),
            "fingerprint": context.fingerprint,
            "files": len({f.path for s in context.shards for f in s.files}),
            "bytes": sum(s.bytes for s in context.shards),
        }
    elif stage == "map":
        from phi_hpc.data.map_stage import run_map

        shards = [shard] if shard is not None else [s.index for s in context.shards]
        results = []
        for index in shards:
            summary = run_map(context, index)
            results.append({"shard": index, "documents": summary["documents"], "bad": len(summary["bad"])})
        result = {"stage": "map", "shards": results, "total_shards": len(context.shards)}
    elif stage == "reduce":
        from phi_hpc.data.reduce import run_reduce

        result = {"stage": "reduce", **run_reduce(context)}
    else:
        from phi_hpc.data.pack import run_pack

        manifest = run_pack(context)
        report.print_summary(manifest, config.output_dir)
        result = manifest
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else json.dumps(result, sort_keys=True))


# prepare's options that set the config field of the same name (None: not given, the config's value stays)
CONFIG_OPTIONS = (
    "tokenizer",
    "output_dir",
    "workers",
    "strict",
    "max_documents",
    "quality_model",
    "quality_scores",
    "quality_threshold",
    "decontaminate",
    "decontaminate_report_only",
    "benchmark_data",
)


def prepare_config(options: dict):
    """prepare's config from its parsed options: --config and --set first, then the options given. The one
    place it is built, for ``prepare`` and for ``submit prepare`` (which plans the arrays from it)."""
    from phi_hpc.config import load_config
    from phi_hpc.data.config import PrepareConfig

    config = load_config(PrepareConfig, options.get("config_path"), options.get("overrides") or ())  # validated first
    given = {"inputs": list(options.get("inputs") or ()) or None, **{key: options.get(key) for key in CONFIG_OPTIONS}}
    try:
        config = dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid option: {exc}") from None
    if config.decontaminate_report_only and not config.decontaminate:
        config = dataclasses.replace(config, decontaminate=True)  # report-only implies the stage
    return config


def prepare_config_from_args(args: list[str], caller: str = "submit prepare"):
    """The config ``prepare ARGS`` would run with, for ``caller``, which runs every stage itself (no
    --stage/--shard) and passes ARGS on to its jobs unchanged."""
    try:
        context = prepare_command.make_context("prepare", list(args), resilient_parsing=False)
    except click.exceptions.Exit:
        raise UsageError(f"{caller}: nothing to submit (help requested)") from None
    except click.ClickException as exc:
        raise UsageError(f"{caller}: {exc.format_message()}", "see phi-hpc prepare --help") from None
    if context.params.get("stage", "all") != "all" or context.params.get("shard") is not None:
        raise UsageError(f"{caller} runs every stage itself: leave out --stage/--shard")
    return prepare_config(context.params)


@click.group("tokenizer")
def tokenizer_group():
    """Build a tokenizer for users who do not have one."""


@tokenizer_group.command("train")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write tokenizer.json into.",
)
@click.option(
    "--vocab-size",
    type=int,
    default=50295,
    show_default=True,
    help="Total entries, including the special and whitespace-run tokens.",
)
@click.option("--min-frequency", type=int, default=2, show_default=True)
@click.option("--glob", "glob_pattern", default="**/*.py", show_default=True, help="Files of INPUT folders to read.")
@click.option("--text-key", default="text", show_default=True, help="Text field of .jsonl/.parquet inputs.")
@click.option("--max-documents", type=int, help="Train on the first N documents only.")
def tokenizer_train_command(inputs, output_dir, vocab_size, min_frequency, glob_pattern, text_key, max_documents):
    """Train a byte-level BPE (GPT-2/CodeGen style) with whitespace-run tokens on a corpus."""
    from phi_hpc.data.bpe_train import train_tokenizer

    summary = train_tokenizer(
        list(inputs),
        output_dir,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        glob=glob_pattern,
        text_key=text_key,
        max_documents=max_documents,
    )
    click.echo(json.dumps(summary, sort_keys=True))


@click.command("inspect")
@click.argument("prefix", type=click.Path())
@click.option("--tokenizer", help="Decode with this tokenizer (default: the one named in the folder's manifest.json).")
@click.option("-n", "--samples", type=int, default=3, show_default=True, help="Documents to decode and show.")
@click.option("--max-chars", type=int, default=600, show_default=True, help="Characters shown per document.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON on stdout.")
def inspect_command(prefix, tokenizer, samples, max_chars, as_json):
    """Statistics of a .bin/.idx pair and a few decoded documents (PREFIX is the path without .bin/.idx)."""
    from phi_hpc.data.inspect import inspect_dataset

    inspect_dataset(prefix, tokenizer=tokenizer, samples=samples, max_chars=max_chars, as_json=as_json)


COMMANDS = [prepare_command, tokenizer_group, inspect_command]
