"""Reading a synthetic item's answer: its code, its CodeExercises parts, its dedup key, its own tests.

Exercises follow phi-1's CodeExercises form: a function signature and docstring (``prompt``), then
the body (``completion``); tests the model wrote (top-level ``assert`` lines) are run in
:mod:`phi_hpc.eval.sandbox`. What the run loop (:mod:`phi_hpc.quality.synth`) keeps or asks again is
decided there; this module only takes answers apart and checks them.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


def normalized_digest(text: str) -> str:
    """Whitespace- and case-insensitive content key for de-duplication."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def extract_code(answer: str) -> str:
    match = _FENCE.search(answer)
    return (match.group(1) if match else answer).strip("\n") + "\n"


@dataclass(frozen=True)
class Exercise:
    prompt: str  # signature + docstring
    completion: str  # the body
    tests: str  # top-level asserts, possibly empty


def split_exercise(code: str) -> Exercise | None:
    """Cut code into CodeExercises parts; None if it does not parse or has no documented function."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    lines = code.splitlines(keepends=True)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or ast.get_docstring(node) is None:
            continue
        docstring = node.body[0]
        if len(node.body) < 2:
            return None  # a docstring and nothing to complete
        prompt = "".join(lines[: docstring.end_lineno])
        completion = "".join(lines[docstring.end_lineno : node.end_lineno])
        tests = "".join(
            ast.get_source_segment(code, stmt) + "\n"
            for stmt in tree.body
            if isinstance(stmt, ast.Assert) and stmt.lineno > node.end_lineno
        )
        return Exercise(prompt, completion, tests)
    return None


class ExerciseChecker:
    """Runs an exercise's own asserts in the evaluation sandbox (opened on first use)."""

    def __init__(self, timeout_s: float):
        import threading

        self.timeout_s = timeout_s
        self._sandbox = None
        self._lock = threading.Lock()  # generation threads share one sandbox worker; runs take turns

    def __call__(self, exercise: Exercise) -> tuple[bool, str | None]:
        from phi_hpc.eval.sandbox import Program, Sandbox, SandboxLimits

        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(workers=1, limits=SandboxLimits(timeout_s=self.timeout_s))
            result = self._sandbox.run(Program(solution=exercise.prompt + exercise.completion, tests=exercise.tests))
        return result.passed, result.error

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
