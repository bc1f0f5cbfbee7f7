"""Acceptance 5: synth against the fake endpoint drops truncated outputs, removes near-duplicates,
reports tokens and cost from `usage`, stops at the spend cap; plus shared rate limiting, the
constant-memory log, topic trees, function-name seeds, diversity statistics and label defaults."""

from __future__ import annotations

import json
import threading

import pytest

from phi_hpc.quality.appendlog import AppendLog
from phi_hpc.quality.openai_client import EndpointConfig, RateLimiter
from phi_hpc.quality.synth import SynthConfig, synthesize
from tests.quality.fake_openai import FakeOpenAI

FAST = ["--timeout", "5", "--backoff", "0.01", "--max-retries", "2"]


def _endpoint(url: str, **extra) -> EndpointConfig:
    return EndpointConfig(base_url=url, model="fake", timeout_s=5, max_retries=2, backoff_s=0.01, **extra)


def _read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_truncated_answers_are_dropped_and_asked_again(tmp_path):
    out = tmp_path / "textbook.jsonl"
    with FakeOpenAI(faults=False, truncate_every=3) as server:
        summary = synthesize(
            str(out), _endpoint(server.url), SynthConfig(kind="textbook", count=12, max_attempts=20, concurrency=2)
        )
    records = _read(out)
    assert len(records) == 12 and summary["failed_count"] == 0
    assert server.events["truncated"] >= 2 and summary["rejected"]["truncated"] == server.events["truncated"]
    assert all(r["text"].rstrip().endswith("```") for r in records)  # every kept answer is whole


def test_near_duplicates_are_removed_through_minhash(tmp_path):
    with FakeOpenAI(faults=False, near_duplicates=True) as server:
        near = synthesize(
            str(tmp_path / "near.jsonl"),
            _endpoint(server.url),
            SynthConfig(kind="textbook", count=5, max_attempts=3, concurrency=1),
        )
        exact_only = synthesize(
            str(tmp_path / "exact.jsonl"),
            _endpoint(server.url),
            SynthConfig(kind="textbook", count=5, max_attempts=3, concurrency=1, near_duplicate_jaccard=1.0),
        )
    # The answers differ in their title only: exact dedup keeps them all, MinHash keeps one.
    assert exact_only["items"] == 5 and len({r["text"] for r in _read(tmp_path / "exact.jsonl")}) == 5
    assert near["items"] == 1 and near["failed_count"] == 4
    rejected = near["rejected"]
    assert rejected["near_duplicate"] >= 8 and rejected["near_duplicate"] + rejected.get("duplicate", 0) == 4 * 3


def test_cost_is_reported_and_the_run_stops_at_the_spend_cap(tmp_path, run_cli):
    out = tmp_path / "textbook.jsonl"
    prices = ["--price-input", "1000", "--price-output", "4000"]  # dollars per million tokens
    with FakeOpenAI(faults=False) as server:
        base = [
            "synth",
            "textbook",
            "-o",
            str(out),
            "-n",
            "20",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            "--concurrency",
            "1",
            *prices,
            *FAST,
        ]
        proc = run_cli(*base, "--spend-cap", "0.5")
        assert proc.returncode == 3 and "spend cap" in proc.stderr, proc.stderr[-2000:]
        summary = json.loads((tmp_path / "textbook.jsonl.summary.json").read_text())
        usage = summary["usage"]
        # Tokens come from the server's usage fields, and the dollars from them.
        assert usage["prompt_tokens"] == server.events["prompt_tokens"] > 0
        assert usage["completion_tokens"] == server.events["completion_tokens"] > 0
        cost = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 4000) / 1e6
        assert summary["cost_usd"] == pytest.approx(cost)
        # Stopped at the cap: it was reached, and the last request began below it.
        per_request = cost / server.events["answered"]
        assert 0.5 <= cost < 0.5 + 2 * per_request
        assert 0 < summary["items"] < 20 and "spend cap" in summary["stopped"]
        answered_at_cap = server.events["answered"]
        # A higher cap resumes where it stopped.
        run_cli(*base, "--spend-cap", "100", check=True)
    assert len(_read(out)) == 20 and server.events["answered"] > answered_at_cap


def test_rate_limiter_spaces_requests_across_threads():
    now = [100.0]
    waits: list[float] = []
    lock = threading.Lock()

    def sleep(seconds):  # a fake clock: nothing really waits, the waits are recorded
        with lock:
            waits.append(seconds)

    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=0, clock=lambda: now[0], sleep=sleep)
    threads = [threading.Thread(target=lambda: [limiter.acquire(10) for _ in range(3)]) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Nine requests at one instant, one a second allowed: slots 0..8 s, one each, whichever thread.
    assert sorted([0.0] + waits) == [float(i) for i in range(9)]
    tokens = RateLimiter(requests_per_minute=0, tokens_per_minute=600, clock=lambda: now[0], sleep=lambda s: None)
    assert [tokens.acquire(100) for _ in range(3)] == [0.0, 10.0, 20.0]  # 100 tokens = 10 s of budget


def test_append_log_keeps_only_the_named_fields(tmp_path):
    path = tmp_path / "log.jsonl"
    with AppendLog(path, fields=("id",)) as log:
        log.append({"id": "a", "text": "x" * 10000})
    seen = []
    with AppendLog(path, fields=("id",), on_record=seen.append) as log:
        assert log.records == [{"id": "a"}] and log.ids == {"a"}
    assert seen[0]["text"] == "x" * 10000  # whole records stream past on_record, and are not kept


@pytest.mark.slow
def test_topic_tree_function_names_and_diversity(tmp_path, run_cli):
    roots = tmp_path / "roots.txt"
    roots.write_text("recursion\nsorting\n")
    tree = tmp_path / "topics.jsonl"
    with FakeOpenAI(faults=False) as server:
        run_cli(
            "synth",
            "topics",
            "-o",
            str(tree),
            "--roots",
            str(roots),
            "--branching",
            "3",
            "--depth",
            "2",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            *FAST,
            check=True,
        )
        summary = json.loads((tmp_path / "topics.jsonl.summary.json").read_text())
        assert summary["leaves"] == 2 * 3 * 3 and summary["expanded_this_run"] == 2 + 6
        rerun = run_cli(
            "synth",
            "topics",
            "-o",
            str(tree),
            "--roots",
            str(roots),
            "--branching",
            "3",
            "--depth",
            "2",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            *FAST,
            check=True,
        )
        assert rerun.returncode == 0
        assert json.loads((tmp_path / "topics.jsonl.summary.json").read_text())["expanded_this_run"] == 0
        names = tmp_path / "names.txt"
        names.write_text("count_islands\nmerge_intervals\nrank_votes\n")
        out = tmp_path / "exercises.jsonl"
        run_cli(
            "synth",
            "exercises",
            "-o",
            str(out),
            "-n",
            "6",
            "--topics",
            str(tree),
            "--function-names",
            str(names),
            "--no-run-tests",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            *FAST,
            check=True,
        )
    records = _read(out)
    leaves = {" > ".join(json.loads(line)["path"]) for line in tree.read_text().splitlines() if '"leaf": true' in line}
    assert len(leaves) == 18 and all(r["spec"]["topic"] in leaves for r in records)
    assert all(f"def {r['spec']['function_name']}(" in r["prompt"] for r in records)
    diversity = json.loads((tmp_path / "exercises.jsonl.summary.json").read_text())["diversity"]
    assert diversity["items"] == 6 and diversity["distinct_topics"] >= 3
    assert 1 <= diversity["distinct_function_names"] <= 3 and 0 < diversity["distinct_3gram_ratio"] <= 1


def test_label_defaults_to_temperature_0_and_asks_before_labelling_everything(tmp_path, run_cli):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.py").write_text(f'def f{i}(x):\n    """Return x plus {i}."""\n    return x + {i}\n')
    with FakeOpenAI(faults=False) as server:
        common = [
            "quality",
            "label",
            str(corpus),
            "-o",
            str(tmp_path / "labels.jsonl"),
            "--endpoint",
            server.url,
            "--model",
            "fake",
            *FAST,
        ]
        proc = run_cli(*common)  # no --sample, no cap, no terminal to ask on
        assert proc.returncode == 2 and "refusing to label all 3 documents" in proc.stderr
        assert server.events["requests"] == 0
        run_cli(*common, "--sample", "2", check=True)
        run_cli(*common, "--token-cap", "100000", check=True)  # a cap bounds the cost: no question
    assert set(server.temperatures) == {0.0}
    assert len(_read(tmp_path / "labels.jsonl")) == 3
