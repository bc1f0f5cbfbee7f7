"""Helpers that disguise benchmark solutions the way a scraped copy might be disguised."""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import re
from pathlib import Path

BUILTINS = set(dir(builtins))


class _Renamer(ast.NodeTransformer):
    """Renames every non-builtin name, argument and function (consistently, like a refactoring tool)."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in BUILTINS or name in {"List", "Tuple", "Optional", "Any", "Dict", "math", "re", "hashlib"}:
            return name
        return self.mapping.setdefault(name, f"renamed_{len(self.mapping)}_{name[::-1]}")

    def visit_Name(self, node):
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        return node

    def visit_FunctionDef(self, node):
        node.name = self._new(node.name)
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            node.body = node.body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node


def disguise(source: str) -> str:
    """Rename identifiers, drop docstrings, re-render, and re-indent with two spaces."""
    tree = _Renamer().visit(ast.parse(source))
    text = ast.unparse(tree)
    return re.sub(r"^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), text, flags=re.M)


def humaneval_problems(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def plant(host: str, snippet: str) -> str:
    """Put ``snippet`` before the first top-level definition in the second half of the host."""
    lines = host.splitlines()
    cut = len(lines) // 2
    while cut < len(lines) and not (
        lines[cut].startswith(("def ", "class ", "@")) and not lines[cut - 1].startswith("@")
    ):
        cut += 1
    return "\n".join(lines[:cut] + ["", "", snippet, "", ""] + lines[cut:]) + "\n"
