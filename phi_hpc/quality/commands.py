"""CLI of the quality area: ``quality label|train|score|threshold``; the area's ``COMMANDS`` also
include ``decontaminate`` (:mod:`phi_hpc.quality.decontaminate_commands`) and ``synth
textbook|exercises|topics`` (:mod:`phi_hpc.quality.synth_commands`), in that order.

Only click and the standard library at import time; numpy, scikit-learn and torch are imported in
the command bodies. Every command writes a JSON summary next to its output (``OUT.summary.json``,
or ``MODEL.report.json`` for ``quality train``) and prints a short table
(:mod:`phi_hpc.quality.command_io`).
"""

from __future__ import annotations

import functools
import sys

import click

from phi_hpc.cli_options import endpoint_config, endpoint_options
from phi_hpc.errors import UsageError
from phi_hpc.quality.command_io import iter_inputs, summarize
from phi_hpc.quality.decontaminate_commands import decontaminate_command
from phi_hpc.quality.score_commands import score_command, threshold_command
from phi_hpc.quality.synth_commands import synth_group

# -- quality ---------------------------------------------------------------------------------------


@click.group("quality")
def quality_group() -> None:
    """Label code for educational value and train the quality classifier used by `prepare --quality-model`."""


@quality_group.command("label")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Labels .jsonl (appended to; resumable).")
@click.option("--sample", type=int, help="Label a seeded random sample of N documents instead of all.")
@click.option("--seed", default=0, show_default=True)
@click.option("--prompt-template", type=click.Path(dir_okay=False), help="Prompt file with a {code} placeholder.")
@click.option("--print-template", is_flag=True, help="Print the default prompt template and exit.")
@click.option("--positive-score", default=6.0, show_default=True, help="Scores >= this are label 1.")
@click.option("--max-chars", default=6000, show_default=True, help="Characters of each file shown to the model.")
@click.option("--glob", default="**/*.py", show_default=True, help="Files of an input folder to read.")
@click.option("--text-key", default="text", show_default=True, help="Text field of .jsonl/.parquet inputs.")
@click.option(
    "--yes",
    "assume_yes",
    is_flag=True,
    help="Without --sample: label every document without asking (a corpus can cost a fortune).",
)
@functools.partial(endpoint_options, temperature=0.0)  # a label is a measurement: greedy, reproducible
def label_command(
    inputs,
    output,
    sample,
    seed,
    prompt_template,
    print_template,
    positive_score,
    max_chars,
    glob,
    text_key,
    assume_yes,
    **kwargs,
):
    """Ask an LLM for each file's educational value (phi-1's GPT-4 annotation), as labels jsonl.

    \b
    Resumable: rerun the same command after a kill; files already labelled are skipped.
    Example: phi-hpc quality label data/ --sample 2000 -o labels.jsonl \\
               --endpoint http://gpu-node:8000/v1 --model meta-llama/Llama-3.1-70B-Instruct
    """
    from phi_hpc.quality.label import LabelConfig, label_documents, load_template, sample_documents

    if print_template:
        from phi_hpc.quality.label import DEFAULT_TEMPLATE

        click.echo(DEFAULT_TEMPLATE, nl=False)
        return
    if not output:
        raise UsageError("no output file", "pass -o labels.jsonl")
    if sample is not None and sample < 1:
        raise UsageError(f"--sample {sample}: need at least 1 document", "e.g. --sample 2000")
    template = load_template(prompt_template)
    endpoint = endpoint_config(kwargs)
    if sample is None and not assume_yes:
        _confirm_labelling_everything(inputs, glob, text_key, endpoint)
    config = LabelConfig(
        sample=sample, seed=seed, max_chars=max_chars, positive_score=positive_score, concurrency=kwargs["concurrency"]
    )
    bad: list = []
    # Streamed into the reservoir: a --sample of a large corpus holds only the sample in memory.
    documents = sample_documents(iter_inputs(inputs, glob, text_key, bad), sample, seed)
    from phi_hpc.progress import progress_bar

    with progress_bar() as progress:
        summary = label_documents(documents, output, endpoint, config, template, progress)
    summary["bad_inputs"] = [b.to_dict() for b in bad]
    summarize(
        "quality label",
        summary,
        f"{output}.summary.json",
        ["documents", "already_done", "labelled", "unparsed_answers", "failed", "retries"],
    )
    if summary["failed"]:
        sys.exit(1)


def _confirm_labelling_everything(inputs, glob: str, text_key: str, endpoint) -> None:
    """No --sample: count the documents and ask (or, without a terminal, refuse) before labelling all."""
    count = sum(1 for _ in iter_inputs(inputs, glob, text_key, []))
    if endpoint.spend_cap is not None or endpoint.token_cap is not None:
        return  # a cap bounds the cost already
    message = f"label all {count} documents (no --sample, no --spend-cap)?"
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {message}", "pass --sample N, --spend-cap DOLLARS, --token-cap N or --yes")
    if not click.confirm(message[0].upper() + message[1:], default=False, err=True):
        raise UsageError("labelling cancelled", "pass --sample N to label a sample")


@quality_group.command("train")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file (.npz).")
@click.option(
    "--embedder",
    type=click.Choice(["hashed", "lm"]),
    default="hashed",
    show_default=True,
    help="hashed: fast CPU bag of tokens; lm: mean-pooled hidden states of --model-dir.",
)
@click.option("--model-dir", type=click.Path(), help="--embedder lm: our checkpoint or a local HF folder.")
@click.option(
    "--tokenizer", type=click.Path(dir_okay=False), help="--embedder lm: tokenizer.json if the folder has none."
)
@click.option(
    "--max-tokens",
    default=1536,
    show_default=True,
    help="--embedder lm: tokens per file (~6000 characters, what `quality label` shows the LLM).",
)
@click.option("--dim", default=2048, show_default=True, help="--embedder hashed: hash buckets.")
@click.option("--trees", default=200, show_default=True, help="Random forest size.")
@click.option("--max-depth", type=int, help="Tree depth limit (default: unlimited).")
@click.option("--holdout", default=0.2, show_default=True, help="Share of labels held out for the report.")
@click.option("--seed", default=0, show_default=True)
@click.option("--score-threshold", type=float, help="Cut 0-10 scores into labels (default: use 'label').")
@click.option(
    "--target",
    type=click.Choice(["auto", "binary", "score"]),
    default="auto",
    show_default=True,
    help="score: regress the 0-10 grades (scores are grades; measured better, see "
    "docs/benchmarks/quality.md); binary: classify 0/1 labels (probabilities); auto: score when "
    "the lines carry scores and no --score-threshold is given.",
)
@click.option(
    "--group-by",
    type=click.Choice(["folder", "none"]),
    default="folder",
    show_default=True,
    help="--target score: hold out whole folders of the lines' origin (no near-copies across the split).",
)
def train_command(
    labels,
    output,
    embedder,
    model_dir,
    tokenizer,
    max_tokens,
    dim,
    trees,
    max_depth,
    holdout,
    seed,
    score_threshold,
    target,
    group_by,
):
    """Train the random-forest quality classifier on LABELS.jsonl ({"text", "label": 0|1}).

    Prints held-out accuracy/F1/AUC and writes OUTPUT (plain arrays, safe to load) and
    OUTPUT.report.json. Use it with: phi-hpc prepare ... --quality-model OUTPUT --quality-threshold 0.5
    """
    from phi_hpc.quality.classifier_training import TrainConfig, load_labels, train_classifier
    from phi_hpc.quality.embedders import EmbedderSpec

    if not 0 < holdout < 1:
        raise UsageError(f"--holdout {holdout} must be between 0 and 1", "e.g. --holdout 0.2")
    if embedder == "lm" and not model_dir:  # before reading a possibly large labels file
        raise UsageError("--embedder lm needs --model-dir", "pass a checkpoint or a local HF folder")
    groups = None
    if target == "auto":
        target = "binary" if score_threshold is not None or not _has_scores(labels) else "score"
    if target == "score":
        from phi_hpc.quality.classifier_training import load_grades

        texts, label_values, folders = load_grades(labels)
        groups = folders if group_by == "folder" else None
    else:
        texts, label_values = load_labels(labels, score_threshold)
    spec = EmbedderSpec(kind=embedder, dim=dim, model_dir=model_dir, tokenizer=tokenizer, max_tokens=max_tokens)
    model = train_classifier(
        texts,
        label_values,
        spec,
        TrainConfig(trees=trees, max_depth=max_depth, holdout=holdout, seed=seed, target=target),
        groups=groups,
    )
    model.save(output)
    summary = {
        "model": output,
        "labels": labels,
        "examples": len(texts),
        "embedder": embedder,
        "target": target,
        **{f"heldout_{k}": v for k, v in model.report["heldout"].items()},
        "report": model.report,
    }
    summarize(
        "quality train",
        summary,
        f"{output}.report.json",
        ["examples", "heldout_n", "heldout_accuracy", "heldout_f1", "heldout_auc"]
        if target == "binary"
        else ["examples", "heldout_n", "heldout_spearman", "heldout_mae"],
    )


def _has_scores(path: str) -> bool:
    """Whether a labels file carries 0-10 scores (as `quality label` writes), judged by its lines."""
    import os

    from phi_hpc.fileio import iter_jsonl
    from phi_hpc.quality.classifier_training import load_labels

    if not os.path.isfile(path):
        return False  # load_labels says the file is missing
    try:
        return any(isinstance(r, dict) and r.get("score") is not None for _, r in iter_jsonl(path, "fix that line"))
    except UsageError:
        load_labels(path)  # reports the file's problem in its usual words
        raise


quality_group.add_command(score_command)
quality_group.add_command(threshold_command)

COMMANDS = [quality_group, decontaminate_command, synth_group]
