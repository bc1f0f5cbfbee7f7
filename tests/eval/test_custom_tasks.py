"""``--task PATH.jsonl``: a problem set of one's own (paper section 3), in the same sandbox, with pass@k."""

from __future__ import annotations

import json

import pytest

PROBLEMS = [
    {
        "task_id": "mine/add",
        "prompt": 'def add(a, b):\n    """a + b"""\n',
        "entry_point": "add",
        "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n",
        "canonical_solution": "    return a + b\n",
    },
    {
        "task_id": "mine/rev",
        "prompt": "def rev(s):\n",
        "tests": "assert rev('abc') == 'cba'\n",
        "canonical_solution": "    return s[::-1]\n",
    },
    {
        "task_id": "mine/even",
        "prompt": "def evens(xs):\n",
        "entry_point": "evens",
        "tests": "assert evens([1, 2, 3, 4]) == [2, 4]\n",
        "stop": ["\nprint"],
        "canonical_solution": "    return [x for x in xs if x % 2 == 0]\n",
    },
    {
        "task_id": "mine/fact",
        "prompt": "import math\n\ndef fact(n):\n",
        "tests": "assert fact(5) == 120\nassert fact(0) == 1\n",
        "canonical_solution": "    return math.factorial(n)\n",
    },
    {
        "task_id": "mine/div",
        "prompt": "def safe_div(a, b):\n",
        "entry_point": "safe_div",
        "tests": "def check(f):\n    assert f(6, 3) == 2\n    assert f(1, 0) is None\n",
        "canonical_solution": "    return None if b == 0 else a / b\n",
    },
]
WRONG = {
    "mine/add": "    return a - b\n",
    "mine/rev": "    return s\n",
    "mine/even": "    return xs\n",
    "mine/fact": "    return n\n",
    "mine/div": "    return a / b\n",
}


@pytest.fixture
def problem_file(tmp_path):
    path = tmp_path / "my-set.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def test_five_problems_score_as_expected(run_cli, tmp_path, problem_file):
    samples = []
    for problem in PROBLEMS:  # right, wrong, right: pass@1 2/3 per problem
        right = problem["canonical_solution"]
        samples += [{"task_id": problem["task_id"], "completion": c} for c in (right, WRONG[problem["task_id"]], right)]
    samples_path = tmp_path / "samples.jsonl"
    samples_path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    out = tmp_path / "res.jsonl"
    done = run_cli("eval", "score", str(samples_path), "--task", str(problem_file), "--k", "1,3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, True] * 5, [r["error"] for r in rows]
    summary = json.loads((tmp_path / "res.summary.json").read_text())
    assert summary["pass_at_k"]["pass@1"] == pytest.approx(2 / 3) and summary["pass_at_k"]["pass@3"] == 1.0
    assert summary["problems_attempted"] == 5


def test_check_runs_the_reference_solutions(run_cli, tmp_path, problem_file):
    done = run_cli("eval", "check", "--task", str(problem_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed 5/5" in done.stdout and (tmp_path / "eval-check-my-set.jsonl").is_file()


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "my-set.jsonl:3: invalid JSON"),
        (json.dumps({"task_id": "x", "prompt": "def f():\n"}), "my-set.jsonl:3: field 'tests' is missing"),
        (
            json.dumps({"task_id": "mine/add", "prompt": "p", "tests": "t"}),
            "my-set.jsonl:3: task_id 'mine/add' already",
        ),
        (json.dumps({"task_id": "y", "prompt": "p", "tests": "t", "stop": "x"}), "my-set.jsonl:3: field 'stop'"),
    ],
)
def test_a_malformed_line_is_one_line_naming_it(run_cli, tmp_path, line, message):
    path = tmp_path / "my-set.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS[:2]) + line + "\n")
    done = run_cli("eval", "check", "--task", str(path))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
