"""The zygote's code reaches the sandbox as parts run in order in one namespace (``worker.ZYGOTE_PARTS``):
nothing inside the sandbox imports them, so the rules that make that work are checked here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import phi_hpc
from phi_hpc.eval.worker import ZYGOTE_PARTS, _zygote_code

PACKAGE = Path(phi_hpc.__file__).parent
MODULES = {f"phi_hpc.eval.{part.stem}": index for index, part in enumerate(ZYGOTE_PARTS)}


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_the_parts_are_modules_of_the_package_and_the_loop_comes_last():
    # In the package's own folder, so a wheel (find_packages) ships them like any module.
    assert all(part.is_file() and part.parent == PACKAGE / "eval" for part in ZYGOTE_PARTS)
    assert ZYGOTE_PARTS[-1].name == "zygote.py"
    calls = [[ast.unparse(node) == "main()" for node in ast.parse(part.read_text()).body] for part in ZYGOTE_PARTS]
    assert calls[-1][-1] and sum(map(sum, calls)) == 1  # main() once, at the very end


def test_each_part_uses_the_standard_library_and_names_of_earlier_parts_only():
    trees = {f"phi_hpc.eval.{part.stem}": ast.parse(part.read_text()) for part in ZYGOTE_PARTS}
    for module, index in MODULES.items():
        for node in trees[module].body:
            if isinstance(node, ast.If):  # the readers' block: `if False:` imports of earlier parts' names
                assert ast.unparse(node.test) == "False", module
                for imported in node.body:
                    assert isinstance(imported, ast.ImportFrom) and MODULES.get(imported.module, index) < index, (
                        module,
                        imported.module,
                    )
                    missing = {a.name for a in imported.names} - _top_level_names(trees[imported.module])
                    assert not missing, (module, imported.module, missing)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert all(r.split(".")[0] in sys.stdlib_module_names for r in roots), (module, roots)


def test_no_host_module_imports_a_part():
    parts = set(MODULES) - {"phi_hpc.eval.confine"}
    for path in PACKAGE.rglob("*.py"):
        if path in ZYGOTE_PARTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in parts, path
            elif isinstance(node, ast.Import):
                assert not parts & {a.name for a in node.names}, path


def test_each_part_is_compiled_under_its_own_name():
    import marshal

    codes = marshal.loads(_zygote_code())
    assert [code.co_filename for code in codes] == [part.name for part in ZYGOTE_PARTS]
