"""CLI of the quality area: ``quality label|train``, ``decontaminate``, ``synth textbook|exercises``.

Only click and the standard library at import time; numpy, scikit-learn and torch are imported in
the command bodies. Every command writes a JSON summary next to its output (``OUT.summary.json``,
or ``MODEL.report.json`` for ``quality train``) and prints a short table.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys

import click

from phi_hpc.cli_options import endpoint_config, endpoint_options

from phi_hpc.errors import UsageError


def _iter_inputs(inputs: tuple[str, ...], glob: str, text_key: str, bad: list):
    """(text, origin) of every document of the inputs, streamed and read like ``prepare`` reads them;
    unreadable inputs are appended to ``bad``."""
    from phi_hpc.data.sources import expand_inputs, read_documents

    for source in expand_inputs(list(inputs), glob):
        for doc in read_documents(source, text_key, bad.append):
            yield doc.text, doc.origin


def _summarize(title: str, summary: dict, summary_path: str, keys: list[str]) -> None:
    from rich.table import Table

    from phi_hpc.fileio import write_json
    from phi_hpc.progress import stderr_console

    write_json(summary_path, summary)
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for key in keys:
        value = summary.get(key)
        table.add_row(key.replace("_", " "), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    table.add_row("summary", summary_path)
    stderr_console.print(table)


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
@endpoint_options
def label_command(inputs, output, sample, seed, prompt_template, print_template, positive_score, max_chars, glob,
                  text_key, **kwargs):
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
    config = LabelConfig(sample=sample, seed=seed, max_chars=max_chars, positive_score=positive_score,
                         concurrency=kwargs["concurrency"])
    bad: list = []
    # Streamed into the reservoir: a --sample of a large corpus holds only the sample in memory.
    documents = sample_documents(_iter_inputs(inputs, glob, text_key, bad), sample, seed)
    from phi_hpc.progress import progress_bar

    with progress_bar() as progress:
        summary = label_documents(documents, output, endpoint, config, template, progress)
    summary["bad_inputs"] = [b.to_dict() for b in bad]
    _summarize("quality label", summary, f"{output}.summary.json",
               ["documents", "already_done", "labelled", "unparsed_answers", "failed", "retries"])
    if summary["failed"]:
        sys.exit(1)


@quality_group.command("train")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file (.npz).")
@click.option("--embedder", type=click.Choice(["hashed", "lm"]), default="hashed", show_default=True,
              help="hashed: fast CPU bag of tokens; lm: mean-pooled hidden states of --model-dir.")
@click.option("--model-dir", type=click.Path(), help="--embedder lm: our checkpoint or a local HF folder.")
@click.option("--tokenizer", type=click.Path(dir_okay=False), help="--embedder lm: tokenizer.json if the folder has none.")
@click.option("--max-tokens", default=512, show_default=True, help="--embedder lm: tokens per file.")
@click.option("--dim", default=2048, show_default=True, help="--embedder hashed: hash buckets.")
@click.option("--trees", default=200, show_default=True, help="Random forest size.")
@click.option("--max-depth", type=int, help="Tree depth limit (default: unlimited).")
@click.option("--holdout", default=0.2, show_default=True, help="Share of labels held out for the report.")
@click.option("--seed", default=0, show_default=True)
@click.option("--score-threshold", type=float, help="Cut 0-10 scores into labels (default: use 'label').")
def train_command(labels, output, embedder, model_dir, tokenizer, max_tokens, dim, trees, max_depth, holdout, seed,
                  score_threshold):
    """Train the random-forest quality classifier on LABELS.jsonl ({"text", "label": 0|1}).

    Prints held-out accuracy/F1/AUC and writes OUTPUT (plain arrays, safe to load) and
    OUTPUT.report.json. Use it with: phi-hpc prepare ... --quality-model OUTPUT --quality-threshold 0.5
    """
    from phi_hpc.quality.classifier import EmbedderSpec, TrainConfig, load_labels, train_classifier

    if not 0 < holdout < 1:
        raise UsageError(f"--holdout {holdout} must be between 0 and 1", "e.g. --holdout 0.2")
    if embedder == "lm" and not model_dir:  # before reading a possibly large labels file
        raise UsageError("--embedder lm needs --model-dir", "pass a checkpoint or a local HF folder")
    texts, label_values = load_labels(labels, score_threshold)
    spec = EmbedderSpec(kind=embedder, dim=dim, model_dir=model_dir, tokenizer=tokenizer, max_tokens=max_tokens)
    model = train_classifier(texts, label_values, spec,
                             TrainConfig(trees=trees, max_depth=max_depth, holdout=holdout, seed=seed))
    model.save(output)
    summary = {"model": output, "labels": labels, "examples": len(texts), "embedder": embedder,
               **{f"heldout_{k}": v for k, v in model.report["heldout"].items()}, "report": model.report}
    _summarize("quality train", summary, f"{output}.report.json",
               ["examples", "heldout_n", "heldout_accuracy", "heldout_f1", "heldout_auc"])


# -- decontaminate ---------------------------------------------------------------------------------

@click.command("decontaminate")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Report .jsonl: one line per flagged document (problem, method, reason).")
@click.option("--benchmark-data", type=click.Path(), help="Folder holding HumanEval.jsonl.gz / mbpp.jsonl / sanitized-mbpp.json.")
@click.option("--ngram", default=13, show_default=True, help="N-gram length of the overlap check.")
@click.option("--ast-threshold", default=0.9, show_default=True, help="Normalized-AST similarity that flags.")
@click.option("--embedding-threshold", type=float, help="Also flag by hashed-embedding cosine >= this (off by default).")
@click.option("--glob", default="**/*.py", show_default=True, help="Files of an input folder to read.")
@click.option("--text-key", default="text", show_default=True, help="Text field of .jsonl/.parquet inputs.")
def decontaminate_command(inputs, output, benchmark_data, ngram, ast_threshold, embedding_threshold, glob, text_key):
    """Report documents that overlap HumanEval/MBPP (13-grams, renamed/reformatted code, embeddings).

    `prepare --decontaminate` runs the same checks as a filter; this command only reports.
    """
    from phi_hpc.fileio import atomic_write
    from phi_hpc.progress import progress_bar
    from phi_hpc.quality.decontaminate import build_decontaminator

    if ngram < 3:
        raise UsageError(f"--ngram {ngram} is too short to mean anything", "use 13 (the paper's value) or similar")
    decontaminator = build_decontaminator(benchmark_data, ngram=ngram, ast_threshold=ast_threshold,
                                          embedding_threshold=embedding_threshold)
    bad: list = []
    documents = _iter_inputs(inputs, glob, text_key, bad)  # streamed: corpora need not fit in memory
    flagged = []
    by_method: dict[str, int] = {}
    count = 0
    with progress_bar() as progress:
        task = progress.add_task("decontaminate", total=None)
        while batch := list(itertools.islice(documents, 256)):
            for (_, origin), finding in zip(batch, decontaminator.check_many([t for t, _ in batch])):
                if finding is not None:
                    flagged.append({"document": origin, "problem": finding.problem, "method": finding.method,
                                    "score": finding.score, "reason": finding.reason()})
                    by_method[finding.method] = by_method.get(finding.method, 0) + 1
            count += len(batch)
            progress.advance(task, len(batch))
    with atomic_write(output) as handle:
        for entry in flagged:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    summary = {"report": output, "documents": count, "flagged": len(flagged), "by_method": by_method,
               "benchmark_files": list(decontaminator.benchmarks.files), "bad_inputs": [b.to_dict() for b in bad],
               "config": dataclasses.asdict(decontaminator.config)}
    _summarize("decontaminate", summary, f"{output}.summary.json", ["documents", "flagged", "by_method"])


# -- synth -----------------------------------------------------------------------------------------

@click.group("synth")
def synth_group() -> None:
    """Generate synthetic textbooks and exercises (phi-1's CodeTextbook / CodeExercises) from an LLM."""


def _synth(kind: str, output: str, count: int, seed: int, max_attempts: int, run_tests: bool, kwargs: dict) -> None:
    from phi_hpc.progress import progress_bar
    from phi_hpc.quality.synth import SynthConfig, default_template, load_template, synthesize

    if kwargs["print_template"]:
        click.echo(default_template(kind))
        return
    if not output or count is None:
        raise UsageError("-o OUTPUT and -n COUNT are required", "e.g. -o textbook.jsonl -n 1000")
    template = load_template(kind, kwargs["prompt_template"])
    endpoint = endpoint_config(kwargs)

    if count < 1:
        raise UsageError(f"-n {count}: need at least one item")
    if max_attempts < 1:
        raise UsageError(f"--max-attempts {max_attempts}: need at least one")
    config = SynthConfig(kind=kind, count=count, seed=seed, concurrency=kwargs["concurrency"],
                         max_attempts=max_attempts, run_tests=run_tests,
                         template=None if kwargs["prompt_template"] is None else template)
    with progress_bar() as progress:
        summary = synthesize(output, endpoint, config, progress)
    _summarize(f"synth {kind}", summary, f"{output}.summary.json",
               ["requested", "already_done", "written", "items", "rejected_attempts", "failed_count", "retries"])
    if summary["failed_count"]:
        sys.exit(1)


_common_synth = [
    click.option("-o", "--output", type=click.Path(dir_okay=False),
                 help="Output .jsonl (appended to; rerun the same command to resume)."),
    click.option("-n", "--count", type=int, help="Items wanted in total (ids 0..N-1)."),
    click.option("--seed", default=0, show_default=True, help="Seeds the topic/audience/style/constraint draws."),
    click.option("--max-attempts", default=4, show_default=True,
                 help="Prompts tried per item before giving up (duplicates and broken code are retried)."),
    click.option("--prompt-template", type=click.Path(dir_okay=False),
                 help="Your own template with {topic} {audience} {style} {constraint}."),
    click.option("--print-template", is_flag=True, help="Print the built-in template and exit."),
]


def _with_common(func):
    for option in reversed(_common_synth):
        func = option(func)
    return endpoint_options(func)


@synth_group.command("textbook")
@_with_common
def synth_textbook(output, count, seed, max_attempts, **kwargs):
    """Textbook sections mixing explanation and code, one per line of OUTPUT ({"id", "text", "spec"})."""
    _synth("textbook", output, count, seed, max_attempts, False, kwargs)


@synth_group.command("exercises")
@_with_common
@click.option("--run-tests/--no-run-tests", default=True, show_default=True,
              help="Run each exercise's own asserts in the sandbox and reject failures.")
def synth_exercises(output, count, seed, max_attempts, run_tests, **kwargs):
    """Exercises: signature + docstring (prompt), then the solution (completion), plus their tests."""
    _synth("exercises", output, count, seed, max_attempts, run_tests, kwargs)


COMMANDS = [quality_group, decontaminate_command, synth_group]
