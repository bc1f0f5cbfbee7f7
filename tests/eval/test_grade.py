"""``eval grade``: LLM grades as in the paper's section 3, against a faulty local endpoint, killed and resumed."""

from __future__ import annotations

import gzip
import json

import pytest

from phi_hpc.eval.grade import parse_grade
from tests.quality.fake_openai import FakeOpenAI
from tests.quality.test_synth_label import FAST_RETRY, _kill_after_lines, _read_jsonl


def _samples(tmp_path, humaneval_path):
    problems = [json.loads(line) for line in gzip.open(humaneval_path, "rt")][:6]
    samples = []
    for problem in problems:
        samples.append({"task_id": problem["task_id"], "completion": problem["canonical_solution"]})
        samples.append({"task_id": problem["task_id"], "completion": "    return 12345\n"})
    samples.append(dict(samples[0]))  # the same completion twice is two samples, graded twice
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path, samples


@pytest.mark.slow
def test_one_grade_per_sample_across_faults_rate_limits_and_a_kill(run_cli, tmp_path, humaneval_path):
    samples_path, samples = _samples(tmp_path, humaneval_path)
    run_cli(
        "eval", "score", str(samples_path), "--task", "humaneval", "--data", str(humaneval_path), "--k", "1", check=True
    )  # samples_results.jsonl beside the samples: grade reports pass@1 from it
    grades = tmp_path / "grades.jsonl"
    args = [
        "eval",
        "grade",
        str(samples_path),
        "--task",
        "humaneval",
        "--data",
        str(humaneval_path),
        "-o",
        str(grades),
        "--model",
        "fake",
        "--concurrency",
        "2",
        *FAST_RETRY,
    ]
    with FakeOpenAI(delay_s=0.25, slow_s=1.5) as faulty:  # 500s and timeouts on first requests
        _kill_after_lines([*args, "--endpoint", faulty.url], grades, 3, tmp_path)
        killed_at = len(_read_jsonl(grades))
        assert 3 <= killed_at < len(samples)
    with FakeOpenAI(faults=False, throttle_first=0.05) as limited:  # every first request: 429 + Retry-After
        done = run_cli(*args, "--endpoint", limited.url, check=True)
    rows = _read_jsonl(grades)
    assert len(rows) == len(samples) and len({r["id"] for r in rows}) == len(samples)
    assert sorted(r["index"] for r in rows) == list(range(len(samples)))
    by_index = {r["index"]: r for r in rows}
    for index, sample in enumerate(samples):
        expected = 2 if "12345" in sample["completion"] else 9
        assert by_index[index]["grade"] == expected and by_index[index]["task_id"] == sample["task_id"]
        assert "Grade:" in by_index[index]["reasoning"]
    summary = json.loads((tmp_path / "grades.summary.json").read_text())
    assert summary["already_done"] == killed_at and summary["graded"] == len(samples) and summary["failed"] == 0
    assert summary["mean_grade"] == pytest.approx((9 * 7 + 2 * 6) / 13, abs=1e-4)
    assert summary["pass@1"] == pytest.approx((5 * 0.5 + 2 / 3) / 6)  # five problems 1 of 2, the first 2 of 3
    assert summary["retries"].get("http_429", 0) >= 1
    assert "mean grade" in done.stdout and "pass@1" in done.stdout


def test_grade_parsing_and_one_line_errors(run_cli, tmp_path, humaneval_path):
    assert parse_grade("Rubric says 'Grade: N'.\nGrade: 7") == 7 and parse_grade("grade=11") is None
    assert parse_grade("no number") is None
    samples_path = tmp_path / "s.jsonl"
    samples_path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "Nope/1", "completion": ""}\n')
    done = run_cli(
        "eval",
        "grade",
        str(samples_path),
        "--task",
        "humaneval",
        "--data",
        str(humaneval_path),
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    )
    assert done.returncode == 2 and "s.jsonl:2" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_cli("eval", "grade", str(samples_path), "--task", "humaneval")
    assert done.returncode == 2 and "--endpoint and --model are required" in done.stderr
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("no placeholders")
    done = run_cli(
        "eval",
        "grade",
        str(samples_path),
        "--task",
        "humaneval",
        "--rubric",
        str(rubric),
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    )
    assert done.returncode == 2 and "{problem}" in done.stderr
