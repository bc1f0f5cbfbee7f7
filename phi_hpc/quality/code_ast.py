"""Rename-invariant fingerprints of Python functions, for catching benchmark solutions in disguise.

Renaming variables and re-running a formatter defeats every text n-gram but leaves the syntax tree
alone. So a function becomes the pre-order sequence of its AST: node types, operators, attribute
names and builtin names stay; every other identifier becomes ``v0, v1, ...`` in order of first use
(so the data flow survives renaming), literals become their type, and docstrings and type annotations
(which people add and remove freely) are dropped. Two functions are then compared as token
sequences with :class:`difflib.SequenceMatcher`, whose ratio tolerates a few edited statements.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import re
from dataclasses import dataclass

BUILTIN_NAMES = frozenset(dir(builtins))
_FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)
_SKIPPED_FIELDS = frozenset({"annotation", "returns", "type_comment", "type_params", "ctx", "kind"})


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:]
    return body


class _Normalizer:
    """Emits the normalized token sequence of one function."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.tokens: list[str] = []

    def name(self, identifier: str) -> str:
        if identifier in BUILTIN_NAMES:
            return identifier
        if identifier not in self.names:
            self.names[identifier] = f"v{len(self.names)}"
        return self.names[identifier]

    def visit(self, node: ast.AST) -> None:
        tokens = self.tokens
        if isinstance(node, ast.Name):
            tokens.append(self.name(node.id))
            return
        if isinstance(node, ast.Constant):
            tokens.append(f"<{type(node.value).__name__}>")
            return
        tokens.append(type(node).__name__)
        if isinstance(node, ast.arg):
            tokens.append(self.name(node.arg))
            return
        if isinstance(node, _FUNCTION_NODES + (ast.ClassDef,)):
            tokens.append(self.name(node.name))
        elif isinstance(node, ast.Attribute):
            tokens.append("." + node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            tokens.append(node.arg + "=")
        for field, value in ast.iter_fields(node):
            if field in _SKIPPED_FIELDS:
                continue
            if field == "body" and isinstance(node, _FUNCTION_NODES + (ast.ClassDef,)):
                value = _strip_docstring(value)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
                tokens.append(")")  # closes the list, so nesting survives flattening
            elif isinstance(value, ast.AST):
                self.visit(value)


def function_fingerprint(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    normalizer = _Normalizer()
    normalizer.visit(node)
    return tuple(normalizer.tokens)


def iter_functions(tree: ast.AST):
    """Every function in a module, methods and nested functions included."""
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTION_NODES):
            yield node


def parse_python(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


_FENCED = re.compile(r"^[ \t]*```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)^[ \t]*```", re.M | re.S)


def parse_code_in(text: str) -> list[ast.Module]:
    """The document as Python, or else the Python of its fenced code blocks (a synthetic textbook,
    a README), with line numbers shifted to where each block sits in the document."""
    tree = parse_python(text)
    if tree is not None:
        return [tree]
    trees = []
    for match in _FENCED.finditer(text):
        block = parse_python(match.group(1))
        if block is not None:
            ast.increment_lineno(block, text.count("\n", 0, match.start(1)))
            trees.append(block)
    return trees


def strip_for_comparison(source: str, keep_annotations: bool = False) -> str | None:
    """Source re-rendered without docstrings (and annotations), as the lexical pre-filter indexes it."""
    tree = parse_python(source)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef) + _FUNCTION_NODES):
            node.body = _strip_docstring(node.body) or [ast.Pass()]
        if keep_annotations:
            continue
        if isinstance(node, _FUNCTION_NODES):
            node.returns = None
        if isinstance(node, ast.arg):
            node.annotation = None
    return ast.unparse(tree)


@dataclass(frozen=True)
class FunctionMatch:
    problem: str
    similarity: float
    function: str  # name of the matching function in the document
    lineno: int


def best_function_match(pairs, threshold: float) -> FunctionMatch | None:
    """The most similar (function, reference) pair at or above ``threshold``, if any.

    ``pairs``: (function node, [(problem, fingerprint), ...]) to compare. Lengths bound the ratio
    (it is at most 2*min/(a+b)), so most pairs are rejected before any sequence alignment runs.
    """
    best: FunctionMatch | None = None
    for func, references in pairs:
        tokens = function_fingerprint(func)
        for problem, reference in references:
            short, total = min(len(tokens), len(reference)), len(tokens) + len(reference)
            if 2.0 * short / total < threshold:
                continue
            matcher = difflib.SequenceMatcher(None, tokens, reference, autojunk=False)
            if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
                continue
            score = matcher.ratio()
            if score >= threshold and (best is None or score > best.similarity):
                best = FunctionMatch(problem, score, func.name, func.lineno)
    return best
