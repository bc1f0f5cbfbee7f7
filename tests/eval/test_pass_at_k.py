"""pass@k against exact rational combinatorics, and where the naive formula would overflow."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from phi_hpc.eval.score import pass_at_k, summarize
from phi_hpc.eval.tasks import Problem


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 200])
def test_matches_exact_combinatorics(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), rel=1e-12, abs=1e-15)


def test_stable_where_binomials_overflow_floats():
    n, c, k = 5000, 3, 200
    with pytest.raises(OverflowError):
        float(math.comb(n, k)) / 1.0  # the textbook formula cannot even be evaluated in floats
    assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), rel=1e-12)


def test_edges_and_errors():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    for bad in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_summary_averages_over_problems_and_skips_unreachable_k():
    problems = [Problem(f"T/{i}", "", "", "", "", None, ()) for i in range(3)]
    rows = [{"task_id": "T/0", "passed": p, "status": "passed" if p else "failed"} for p in (True, False)] + [
        {"task_id": "T/1", "passed": False, "status": "timeout"}
    ] * 2
    summary = summarize(rows, "humaneval", problems, ks=(1, 2, 10))
    assert summary["pass_at_k"] == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}
    assert summary["skipped_k"] == [10]
    assert summary["status_counts"] == {"passed": 1, "failed": 1, "timeout": 2, "error": 0}
    assert summary["problems_attempted"] == 2 and "partial" in summary
