"""The shape of the package: no import cycles, short functions, modules of a readable size.

An import cycle means two modules each need the other's internals, so neither can be read, tested or
replaced alone; a function over 80 lines or a module over 400 hides several decisions in one place.
Both are easier to keep out than to take out, so these tests read the source (``ast``, nothing is
imported) and name every offender.

The import graph counts every import, at module level and inside functions alike: a function-level
import only defers the cycle to run time, and an ``if TYPE_CHECKING:`` import is a dependency of the
reader. Imports by name at run time (``importlib.import_module`` in the command registry of
``cli.py``) are not edges. Its nodes are modules; a package's ``__init__`` is a node
of its own, and ``from pkg import name`` leads to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = "phi_hpc"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def package_modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the package."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of a ``from X import ...`` (relative levels resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` is, or the nearest enclosing one (``a.b.c`` -> ``a.b`` when c is an attribute)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(owner for owner in (_owner(target, modules) for target in targets) if owner)
    found.discard(module)
    return found


def import_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name (N lines)`` for each function or method longer than ``limit``, counted from its
    ``def`` line (a command's stack of click option decorators is a declaration, not logic)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_walker_sees_every_kind_of_import(tmp_path):
    """Module- and function-level, relative, and ``from pkg import submodule`` all make edges."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .leaf import VALUE\n")
    (package / "sub" / "leaf.py").write_text("VALUE = 1\ndef f():\n    from phi_hpc import top\n")
    (package / "top.py").write_text("import os\nfrom phi_hpc.sub import leaf\nfrom . import sub\n")
    (package / "other.py").write_text("def g():\n    import phi_hpc.sub.leaf as x\n    from phi_hpc.top import name\n")
    graph = import_graph(tmp_path)
    assert graph["phi_hpc.sub"] == {"phi_hpc.sub.leaf"}
    assert graph["phi_hpc.sub.leaf"] == {"phi_hpc.top"}
    assert graph["phi_hpc.top"] == {"phi_hpc.sub", "phi_hpc.sub.leaf"}
    assert graph["phi_hpc.other"] == {"phi_hpc.sub.leaf", "phi_hpc.top"}
    assert cycles(graph) == [["phi_hpc.sub", "phi_hpc.sub.leaf", "phi_hpc.top"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"c"}}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles in phi_hpc/ (break each one):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_functions_and_modules_are_short():
    too_long = []
    for path in package_modules().values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO_ROOT)} ({lines} lines; at most {MAX_MODULE_LINES})")
        too_long.extend(long_functions(path))
    assert not too_long, f"split these (functions <= {MAX_FUNCTION_LINES} lines):\n" + "\n".join(too_long)
