"""A labelled quality set built from real code: documented stdlib files vs stripped, obfuscated twins."""

from __future__ import annotations

import ast
import builtins
import random
import re
from pathlib import Path

_BUILTINS = set(dir(builtins))


class _Obfuscator(ast.NodeTransformer):
    """Drops docstrings and renames every non-builtin identifier to an opaque ``vN``."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        if name in _BUILTINS or name.startswith("__"):
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def _strip(self, node):
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]

    def visit_Module(self, node):
        self._strip(node)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self._strip(node)
        node.name = self._name(node.name)
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._strip(node)
        node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_Name(self, node):
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._name(node.arg)
        return node

    def visit_Attribute(self, node):
        self.generic_visit(node)
        node.attr = self._name(node.attr)
        return node


def obfuscate(source: str) -> str:
    """Comments go with ``ast.unparse``; docstrings and names go with the transformer."""
    return ast.unparse(_Obfuscator().visit(ast.parse(source)))


def documented_stdlib_files(stdlib_dir: Path, count: int, seed: int = 0, max_bytes: int = 40_000) -> list[str]:
    """Stdlib modules with a module docstring and at least a few comment lines, sampled reproducibly."""
    paths = sorted(p for p in stdlib_dir.glob("*.py"))
    paths += sorted(p for p in stdlib_dir.glob("*/*.py") if "test" not in p.parts[-2])
    random.Random(seed).shuffle(paths)
    out = []
    for path in paths:
        if path.stat().st_size > max_bytes or path.stat().st_size < 1500:
            continue
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        if ast.get_docstring(tree) and len(re.findall(r"^\s*#", text, re.M)) >= 3:
            out.append(text)
        if len(out) == count:
            break
    return out


def labelled_set(stdlib_dir: Path, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for text in documented_stdlib_files(stdlib_dir, count, seed):
        texts += [text, obfuscate(text)]
        labels += [1, 0]
    return texts, labels
