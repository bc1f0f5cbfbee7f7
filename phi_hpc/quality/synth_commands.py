"""CLI of synthetic data: ``synth textbook|exercises|topics`` (phi-1's CodeTextbook / CodeExercises).

Only click and the standard library at import time, like every command module; the generators
(:mod:`phi_hpc.quality.synth`, :mod:`phi_hpc.quality.topics`) load in the command bodies. A run stopped
by a spend or token cap exits 3 (rerun with a higher cap to continue), failed items exit 1.
"""

from __future__ import annotations

import sys

import click

from phi_hpc.cli_options import endpoint_config, endpoint_options
from phi_hpc.errors import UsageError
from phi_hpc.quality.command_io import summarize


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
    summarize(
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
    summarize(
        "synth topics",
        summary,
        f"{output}.summary.json",
        ["roots", "nodes", "leaves", "expanded_this_run", "failed_count", "usage", "stopped"],
    )
    _exit_if_incomplete(summary)
