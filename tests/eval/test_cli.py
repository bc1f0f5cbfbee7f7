"""``phi-hpc eval check`` on the three datasets (acceptance 1) and ``eval score`` end to end."""

from __future__ import annotations

import hashlib
import json

import pytest


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,fixture,total",
    [
        ("humaneval", "humaneval_path", 164),
        ("mbpp-full", "mbpp_path", 974),
        ("mbpp-sanitized", "mbpp_sanitized_path", 427),
    ],
)
def test_every_reference_solution_passes(run_cli, tmp_path, request, task, fixture, total):
    data = request.getfixturevalue(fixture)
    proc = run_cli("eval", "check", "--task", task, "--data", str(data), "--workers", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"passed {total}/{total}" in proc.stdout
    summary = json.loads((tmp_path / f"eval-check-{task}.summary.json").read_text())
    assert summary["passed_samples"] == total and summary["isolation"] == "bwrap" and summary["workers"] == 2


def test_check_exits_nonzero_when_a_reference_fails(run_cli, tmp_path, humaneval_path):
    import gzip

    rows = [json.loads(line) for line in gzip.open(humaneval_path, "rt")][:3]
    rows[1]["canonical_solution"] = "    return None\n"
    data = tmp_path / "three.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("eval", "check", "--task", "humaneval", "--data", str(data))
    assert proc.returncode == 1 and "passed 2/3" in proc.stdout and "1 reference solutions did not pass" in proc.stderr
    assert "FAIL HumanEval/1: failed: AssertionError" in proc.stderr


def test_score_writes_results_in_input_order_and_a_summary(run_cli, tmp_path, humaneval_path):
    import gzip

    problems = {json.loads(row)["task_id"]: json.loads(row) for row in gzip.open(humaneval_path, "rt")}
    samples = []
    for task_id in ("HumanEval/2", "HumanEval/0", "HumanEval/2", "HumanEval/0"):
        right = len(samples) < 2
        samples.append(
            {
                "task_id": task_id,
                "completion": problems[task_id]["canonical_solution"] if right else "    return 12345\n",
            }
        )
    samples_path = tmp_path / "samples.jsonl"
    samples_path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    proc = run_cli(
        "eval",
        "score",
        str(samples_path),
        "--task",
        "humaneval",
        "--data",
        str(humaneval_path),
        "--k",
        "1,2,10",
        "-o",
        str(tmp_path / "out" / "res.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(row) for row in (tmp_path / "out" / "res.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [s["task_id"] for s in samples]
    assert [r["passed"] for r in rows] == [True, True, False, False]
    assert all({"status", "duration", "completion", "error"} <= set(r) for r in rows)
    summary = json.loads((tmp_path / "out" / "res.summary.json").read_text())
    assert summary["pass_at_k"] == {"pass@1": 0.5, "pass@2": 1.0} and summary["skipped_k"] == [10]
    assert summary["problems_attempted"] == 2 and summary["problems_total"] == 164
    assert summary["data"]["sha256"] == hashlib.sha256(humaneval_path.read_bytes()).hexdigest()
    assert "pass@1" in proc.stdout


def test_bad_input_is_one_line_naming_the_line(run_cli, tmp_path, humaneval_path):
    samples_path = tmp_path / "samples.jsonl"
    samples_path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "Nope/1", "completion": ""}\n')
    proc = run_cli("eval", "score", str(samples_path), "--task", "humaneval", "--data", str(humaneval_path))
    assert proc.returncode == 2
    assert "samples.jsonl:2" in proc.stderr and "Nope/1" in proc.stderr and "Traceback" not in proc.stderr
    samples_path.write_text("not json\n")
    proc = run_cli("eval", "score", str(samples_path), "--task", "humaneval", "--data", str(humaneval_path))
    assert proc.returncode == 2 and "samples.jsonl:1" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("eval", "score", str(samples_path), "--task", "humaneval", "--k", "1,x")
    assert proc.returncode == 2 and "--k" in proc.stderr
    assert not (tmp_path / "samples_results.jsonl").exists()
