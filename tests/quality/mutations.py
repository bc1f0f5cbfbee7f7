"""The mutation suite: HumanEval solutions disguised the way a near-copy on the web might be.

Every mutant is renamed and loses its docstring (so no 13-gram survives), then gets statements added,
dropped, or both. Its *true* similarity is the AST similarity (:func:`code_ast.function_fingerprint`
aligned by SequenceMatcher) between the mutant's function and the original; decontamination recall is
then measured per similarity bucket. Shared by the tests and ``benchmarks/quality_eval.py``.
"""

from __future__ import annotations

import ast
import difflib
import random

from phi_hpc.quality import code_ast
from tests.quality.planting import disguise

_ADDED = [
    "_count = 0",
    "_seen = set()",
    "_debug = False",
    "_result = None",
    "_tmp = []",
    "_limit = 1000",
    "_total = 0.0",
]


def _entry(tree: ast.Module, name: str):
    return next(f for f in code_ast.iter_functions(tree) if f.name == name)


def _bodies(func) -> list[list]:
    """Statement lists inside the function (its body and nested blocks)."""
    out = [func.body]
    for node in ast.walk(func):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if node is not func and isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                out.append(block)
    return out


def mutate(source: str, entry_point: str, adds: int, drops: int, rng: random.Random) -> str | None:
    """``source`` with ``adds`` statements inserted and ``drops`` removed from the entry function."""
    tree = ast.parse(source)
    func = _entry(tree, entry_point)
    if func.body and isinstance(func.body[0], ast.Expr) and isinstance(func.body[0].value, ast.Constant):
        func.body = func.body[1:] or [ast.Pass()]
    for _ in range(drops):
        blocks = [b for b in _bodies(func) if len(b) > 1]
        if not blocks:
            return None
        block = rng.choice(blocks)
        block.pop(rng.randrange(len(block) - 1 if isinstance(block[-1], ast.Return) else len(block)))
    for _ in range(adds):
        block = rng.choice(_bodies(func))
        block.insert(rng.randrange(len(block) + 1), ast.parse(rng.choice(_ADDED)).body[0])
    ast.fix_missing_locations(tree)
    return disguise(ast.unparse(tree))


def similarity(a: str, a_entry: str, b: str, b_entry: str | None = None) -> float:
    """AST similarity of two functions: the measure the decontaminator thresholds."""
    fa = code_ast.function_fingerprint(_entry(ast.parse(a), a_entry))
    tree_b = ast.parse(b)
    funcs = list(code_ast.iter_functions(tree_b))
    fb = code_ast.function_fingerprint(_entry(tree_b, b_entry) if b_entry else funcs[0])
    return difflib.SequenceMatcher(None, fa, fb, autojunk=False).ratio()


def mutation_suite(problems: list[dict], per_problem: int = 3, seed: int = 0) -> list[dict]:
    """Mutants of every problem: renamed + (1 add | 1 drop | 1 add 1 drop | 2 adds | 2 drops ...)."""
    rng = random.Random(seed)
    recipes = [(1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1)]
    suite = []
    for problem in problems:
        source = problem["prompt"] + problem["canonical_solution"]
        for k in range(per_problem):
            adds, drops = recipes[(k + int(problem["task_id"].split("/")[1])) % len(recipes)]
            mutant = mutate(source, problem["entry_point"], adds, drops, rng)
            if mutant is None:
                continue
            first = next(iter(code_ast.iter_functions(ast.parse(mutant))))
            suite.append(
                {
                    "problem": problem["task_id"],
                    "text": mutant,
                    "adds": adds,
                    "drops": drops,
                    "similarity": similarity(source, problem["entry_point"], mutant, first.name),
                }
            )
    return suite


BUCKETS = [(0.95, 1.01), (0.9, 0.95), (0.85, 0.9), (0.8, 0.85), (0.0, 0.8)]


def recall_by_bucket(suite: list[dict], flagged: list[bool]) -> list[dict]:
    rows = []
    for lo, hi in BUCKETS:
        members = [f for m, f in zip(suite, flagged) if lo <= m["similarity"] < hi]
        rows.append(
            {
                "bucket": f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}",
                "mutants": len(members),
                "found": sum(members),
                "recall": sum(members) / len(members) if members else None,
            }
        )
    return rows
