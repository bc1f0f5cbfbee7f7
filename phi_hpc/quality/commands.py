"""CLI of the quality area: ``quality label|train``, ``decontaminate``, ``synth textbook|exercises``.

Only click and the standard library at import time; numpy, scikit-learn and torch are imported in
the command bodies. Every command writes a JSON summary next to its output (``OUT.summary.json``,
or ``MODEL.report.json`` for ``quality train``) and prints a short table.
"""

from __future__ import annotations

import functools
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
    documents = sample_documents(_iter_inputs(inputs, glob, text_key, bad), sample, seed)
    from phi_hpc.progress import progress_bar

    with progress_bar() as progress:
        summary = label_documents(documents, output, endpoint, config, template, progress)
    summary["bad_inputs"] = [b.to_dict() for b in bad]
    _summarize(
        "quality label",
        summary,
        f"{output}.summary.json",
        ["documents", "already_done", "labelled", "unparsed_answers", "failed", "retries"],
    )
    if summary["failed"]:
        sys.exit(1)


def _confirm_labelling_everything(inputs, glob: str, text_key: str, endpoint) -> None:
    """No --sample: count the documents and ask (or, without a terminal, refuse) before labelling all."""
    count = sum(1 for _ in _iter_inputs(inputs, glob, text_key, []))
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
    _summarize(
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


# -- decontaminate ---------------------------------------------------------------------------------


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
    summary = run_report(_iter_inputs(inputs, glob, text_key, bad), config, benchmark_data, taus, output, write_clean)
    summary["bad_inputs"] = [b.to_dict() for b in bad]
    _summarize(
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


# -- synth -----------------------------------------------------------------------------------------


@click.group("synth")
def synth_group() -> None:
    """Generate synthetic textbooks and exercises (phi-1's CodeTextbook / CodeExercises) from an LLM."""


def _synth(kind: str, output: str, count: int, seed: int, max_attempts: int, run_tests: bool, kwargs: dict) -> None:
    from phi_hpc.progress import progress_bar
    from phi_hpc.quality.synth import SynthConfig, synthesize
    from phi_hpc.quality.synth_prompts import default_template, load_template

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
    if not 0 < kwargs["near_duplicate"] <= 1:
        raise UsageError(f"--near-duplicate {kwargs['near_duplicate']} must be in (0, 1]", "e.g. 0.7; 1 turns it off")
    config = SynthConfig(
        kind=kind,
        count=count,
        seed=seed,
        concurrency=kwargs["concurrency"],
        max_attempts=max_attempts,
        run_tests=run_tests,
        template=None if kwargs["prompt_template"] is None else template,
        topics_file=kwargs["topics"],
        names_file=kwargs.get("function_names"),
        near_duplicate_jaccard=kwargs["near_duplicate"],
    )
    with progress_bar() as progress:
        summary = synthesize(output, endpoint, config, progress)
    _summarize(
        f"synth {kind}",
        summary,
        f"{output}.summary.json",
        [
            "requested",
            "already_done",
            "written",
            "items",
            "rejected",
            "failed_count",
            "cost_usd",
            "usage",
            "diversity",
            "stopped",
        ],
    )
    _exit_if_incomplete(summary)


def _exit_if_incomplete(summary: dict) -> None:
    if summary.get("stopped"):
        from phi_hpc.progress import stderr_console

        stderr_console.print(f"[bold yellow]stopped: {summary['stopped']}[/]; rerun with a higher cap to continue")
        sys.exit(3)
    if summary["failed_count"]:
        sys.exit(1)


_common_synth = [
    click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        help="Output .jsonl (appended to; rerun the same command to resume).",
    ),
    click.option("-n", "--count", type=int, help="Items wanted in total (ids 0..N-1)."),
    click.option("--seed", default=0, show_default=True, help="Seeds the topic/audience/style/constraint draws."),
    click.option(
        "--max-attempts",
        default=4,
        show_default=True,
        help="Prompts tried per item before giving up (duplicates and broken code are retried).",
    ),
    click.option(
        "--prompt-template",
        type=click.Path(dir_okay=False),
        help="Your own template with {topic} {audience} {style} {constraint}.",
    ),
    click.option("--print-template", is_flag=True, help="Print the built-in template and exit."),
    click.option(
        "--topics",
        type=click.Path(dir_okay=False),
        help="Topics to draw from: one per line, or the tree of `synth topics` (its leaves).",
    ),
    click.option(
        "--near-duplicate",
        default=0.7,
        show_default=True,
        help="Reject answers with this MinHash Jaccard to a kept one (5-word shingles; 1: exact only).",
    ),
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
@click.option(
    "--run-tests/--no-run-tests",
    default=True,
    show_default=True,
    help="Run each exercise's own asserts in the sandbox and reject failures.",
)
@click.option(
    "--function-names",
    type=click.Path(dir_okay=False),
    help="Function-name seeds, one per line (default: 1200 built-in verb_noun names).",
)
def synth_exercises(output, count, seed, max_attempts, run_tests, **kwargs):
    """Exercises: signature + docstring (prompt), then the solution (completion), plus their tests."""
    _synth("exercises", output, count, seed, max_attempts, run_tests, kwargs)


from phi_hpc.quality.score_commands import score_command, threshold_command  # noqa: E402

quality_group.add_command(score_command)
quality_group.add_command(threshold_command)


@synth_group.command("topics")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Topic tree .jsonl (appended to; rerun the same command to resume).",
)
@click.option("--roots", type=click.Path(dir_okay=False), help="Root topics, one per line (default: the 40 built-in).")
@click.option("--branching", default=20, show_default=True, help="Subtopics asked for per node.")
@click.option("--depth", default=2, show_default=True, help="Levels below the roots (40 x 20 x 20 = 16,000 leaves).")
@endpoint_options
def synth_topics(output, roots, branching, depth, **kwargs):
    """Grow a topic tree with the LLM, for `synth textbook|exercises --topics OUTPUT`."""
    from phi_hpc.progress import progress_bar
    from phi_hpc.quality.diversity import load_lines
    from phi_hpc.quality.synth_prompts import TOPICS
    from phi_hpc.quality.topics import grow_topic_tree

    if branching < 1 or depth < 0:
        raise UsageError(f"--branching {branching} / --depth {depth}: need branching >= 1 and depth >= 0")
    endpoint = endpoint_config(kwargs)
    root_topics = load_lines(roots, "roots") if roots else list(TOPICS)
    with progress_bar() as progress:
        summary = grow_topic_tree(output, endpoint, root_topics, branching, depth, kwargs["concurrency"], progress)
    _summarize(
        "synth topics",
        summary,
        f"{output}.summary.json",
        ["roots", "nodes", "leaves", "expanded_this_run", "failed_count", "usage", "stopped"],
    )
    _exit_if_incomplete(summary)


COMMANDS = [quality_group, decontaminate_command, synth_group]
