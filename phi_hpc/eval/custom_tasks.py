"""Your own problem sets (``--task PATH.jsonl``), run in the same sandbox and scored with pass@k.

phi-1's paper (section 3) scores the model on 50 new problems of its own, to rule out that HumanEval
leaked into training. This is the format for such sets: one JSON object per line,

    task_id             string, unique in the file               "mine/0"
    prompt              string: what the model is given          "def add(a, b):\\n    \\"\\"\\"Sum.\\"\\"\\"\\n"
    tests               string: Python run after the solution    "assert add(1, 2) == 3\\n"
    entry_point         optional string: the function under test; when the tests define
                        ``check(candidate)`` (HumanEval's style), the harness calls ``check(<entry_point>)``
    stop                optional list of strings: where a completion ends (default: HumanEval's)
    canonical_solution  optional string: a reference completion, which ``eval check`` runs

The program that runs is ``prompt + completion``, then ``tests`` in a fresh namespace, exactly as for
HumanEval, so a completion continues the prompt. The prompt is the problem set's own code: when it is
valid Python by itself (a header with a docstring, helper functions) it also sets up the tests' namespace.
A task is named by its path; its results go under the file's stem.
"""

from __future__ import annotations

import re
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.fileio import iter_jsonl

FORMAT_HINT = "each line: {task_id, prompt, tests[, entry_point, stop, canonical_solution]} (see docs/evaluation.md)"
_CALLS_CHECK = re.compile(r"^def check\(", re.MULTILINE)


def is_custom_task(name: str) -> bool:
    """A task named by a JSON-lines file rather than one of the built-in benchmarks."""
    return name.endswith((".jsonl", ".jsonl.gz"))


def task_label(name: str) -> str:
    """Folder and report name of a task: built-in names as they are, a file by its stem."""
    if not is_custom_task(name):
        return name
    stem = Path(name).name.removesuffix(".gz").removesuffix(".jsonl")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "custom"


def _string(row: dict, key: str, path: Path, number: int, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip() and key != "tests"):
        what = "missing" if key not in row else f"not a non-empty string ({type(value).__name__})"
        raise UsageError(f"{path}:{number}: field {key!r} is {what}", FORMAT_HINT)
    return value


def _stops(row: dict, path: Path, number: int, default: tuple[str, ...]) -> tuple[str, ...]:
    stops = row.get("stop")
    if stops is None:
        return default
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise UsageError(f"{path}:{number}: field 'stop' must be a list of non-empty strings", FORMAT_HINT)
    return tuple(stops)


def _compiles(code: str) -> bool:
    try:
        compile(code, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def load_custom(path: str | Path, default_stops: tuple[str, ...]) -> list:
    """The problems of a custom set, validated line by line (errors name ``file:line``)."""
    from phi_hpc.eval.problem import Problem

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--task {path}: no such file", "give a JSON-lines problem file or a built-in task name")
    problems, seen = [], {}
    for number, row in iter_jsonl(path, FORMAT_HINT):
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object", FORMAT_HINT)
        task_id = _string(row, "task_id", path, number)
        if task_id in seen:
            raise UsageError(
                f"{path}:{number}: task_id {task_id!r} already used on line {seen[task_id]}",
                "give every problem its own task_id",
            )
        seen[task_id] = number
        prompt, tests = _string(row, "prompt", path, number), _string(row, "tests", path, number)
        entry_point = _string(row, "entry_point", path, number, required=False)
        calls_check = entry_point is not None and _CALLS_CHECK.search(tests) is not None
        problems.append(
            Problem(
                task_id=task_id,
                prompt=prompt,
                solution_prefix=prompt,
                reference=_string(row, "canonical_solution", path, number, required=False) or "",
                tests=tests,
                entry_point=entry_point if calls_check else None,
                stop_sequences=_stops(row, path, number, default_stops),
                expose=(entry_point,) if entry_point and not calls_check else (),
                setup=prompt if _compiles(prompt) else "",
            )
        )
    if not problems:
        raise UsageError(f"{path}: no problems", FORMAT_HINT)
    return problems
