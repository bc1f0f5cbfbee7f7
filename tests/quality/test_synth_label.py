"""Acceptance 3: synth and quality label against a real HTTP server with faults, killed and resumed."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from phi_hpc.quality.label import LabelConfig, label_documents
from phi_hpc.quality.openai_client import ChatClient, EndpointConfig, EndpointError, bounded_map
from phi_hpc.quality.synth import SynthConfig, synthesize
from phi_hpc.quality.synth_answers import split_exercise
from phi_hpc.quality.synth_prompts import draw_spec
from tests.conftest import REPO_ROOT
from tests.quality.fake_openai import FakeOpenAI

FAST_RETRY = ["--timeout", "0.5", "--backoff", "0.01", "--max-retries", "4"]


def _endpoint(url: str, model: str = "fake", timeout_s: float = 0.5) -> EndpointConfig:
    return EndpointConfig(base_url=url, model=model, timeout_s=timeout_s, max_retries=4, backoff_s=0.01)


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_client_retries_http_500_and_timeouts():
    with FakeOpenAI(slow_s=1.5) as server:
        client = ChatClient(_endpoint(server.url, timeout_s=0.4))
        prompts = [f"educational value of ```x = {i}```" for i in range(9)]
        answers = dict(bounded_map(lambda p: client.chat([{"role": "user", "content": p}]), prompts, 3))
    assert all(a.startswith("Score:") for a in answers.values())
    assert server.events["http_500"] >= 1 and server.events["slow"] >= 1
    assert client.retries["http_500"] == server.events["http_500"]
    assert client.retries["timeout"] == server.events["slow"]


def test_client_fails_fast_on_4xx_and_gives_up_on_a_dead_server():
    with FakeOpenAI() as server:
        client = ChatClient(_endpoint(server.url, model="missing-model"))
        with pytest.raises(EndpointError, match="HTTP 404"):
            client.chat([{"role": "user", "content": "hi"}])
        assert client.requests == 1
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChatClient(_endpoint(f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(EndpointError, match="gave up after 5 attempts"):
        client.chat([{"role": "user", "content": "hi"}])
    assert client.retries["connection"] == 4


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill_after_lines(args: list[str], output, lines: int, cwd) -> None:
    """Start ``phi-hpc ARGS``, SIGKILL it once ``output`` has ``lines`` lines (mid-way, not at the end)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "phi_hpc", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if output.exists() and output.read_text().count("\n") >= lines:
                break
            if proc.poll() is not None:
                raise AssertionError(f"finished before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        else:
            raise AssertionError("no progress before the deadline")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_synth_textbook_killed_midway_resumes_to_n_distinct_items(tmp_path, run_cli):
    out = tmp_path / "textbook.jsonl"
    n = 12
    with FakeOpenAI(delay_s=0.25, slow_s=1.5) as server:
        args = [
            "synth",
            "textbook",
            "-o",
            str(out),
            "-n",
            str(n),
            "--endpoint",
            server.url,
            "--model",
            "fake",
            "--concurrency",
            "2",
            *FAST_RETRY,
        ]
        _kill_after_lines(args, out, 4, tmp_path)
        killed_at = len(_read_jsonl(out))
        assert 4 <= killed_at < n
        run_cli(*args, check=True)
    records = _read_jsonl(out)
    summary = json.loads((tmp_path / "textbook.jsonl.summary.json").read_text())
    assert len(records) == n
    assert sorted(r["id"] for r in records) == [f"textbook-s0-{i:06d}" for i in range(n)]
    assert len({r["text"] for r in records}) == n
    assert summary["already_done"] >= killed_at and summary["items"] == n and summary["failed_count"] == 0
    assert server.events["http_500"] >= 1 and server.events["slow"] >= 1


def test_synth_dedups_outputs_by_drawing_new_prompts(tmp_path):
    # The fake's textbook answer depends on the topic only: items whose draws share a topic collide.
    n = 20
    first_topics = [draw_spec(0, i, 0)["topic"] for i in range(n)]
    assert len(set(first_topics)) < n  # the premise: first attempts do repeat topics
    out = tmp_path / "textbook.jsonl"
    with FakeOpenAI(faults=False) as server:
        summary = synthesize(
            str(out), _endpoint(server.url), SynthConfig(kind="textbook", count=n, max_attempts=30, concurrency=4)
        )
    records = _read_jsonl(out)
    assert summary["failed_count"] == 0 and len(records) == n
    assert summary["rejected_attempts"] >= n - len(set(first_topics))
    assert len({r["text"] for r in records}) == n == len({r["spec"]["topic"] for r in records})
    for r in records:  # each record's spec is exactly the seeded draw of its attempt
        assert r["spec"] == draw_spec(0, r["index"], r["attempt"])


def _generate_exercises(tmp_path):
    out = tmp_path / "exercises.jsonl"
    with FakeOpenAI(faults=False, broken_first_exercise=True) as server:
        summary = synthesize(
            str(out), _endpoint(server.url), SynthConfig(kind="exercises", count=6, max_attempts=10, concurrency=2)
        )
    return out, summary


@pytest.mark.slow
def test_synth_exercises_parse_and_pass_their_tests_in_the_sandbox(tmp_path):
    out, summary = _generate_exercises(tmp_path)
    records = _read_jsonl(out)
    assert len(records) == 6 and summary["failed_count"] == 0
    assert summary["rejected_attempts"] >= 1  # the fake's failing self-tests were caught by running them
    for r in records:
        assert r["tests_passed"] is True and r["tests"].startswith("assert ")
        assert r["text"] == r["prompt"] + r["completion"]
        assert r["prompt"].rstrip().endswith('"""') and r["prompt"].lstrip().startswith("def ")
        ast.parse(r["prompt"] + r["completion"] + r["tests"])


@pytest.mark.slow
def test_exercises_are_read_by_prepare_and_by_the_finetune_loader(tmp_path, run_cli, codegen_tokenizer):
    out, _ = _generate_exercises(tmp_path)
    from phi_hpc.train.sources import tokenize_jsonl

    tokens, mask = tokenize_jsonl(out, str(codegen_tokenizer))
    assert len(tokens) == len(mask) > 0 and 0 < mask.sum() < len(mask)  # completions trained, prompts masked
    run_cli("prepare", str(out), "--tokenizer", str(codegen_tokenizer), "-o", str(tmp_path / "prepared"), check=True)
    counts = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["counts"]
    assert counts["documents_in"] == 6 and counts["bad"] == 0


def test_split_exercise_rejects_what_is_not_an_exercise():
    assert split_exercise("def f(:\n") is None
    assert split_exercise("def f(x):\n    return x\n") is None  # no docstring: no task statement
    assert split_exercise('def f(x):\n    """Only a docstring."""\n') is None
    ex = split_exercise('import math\n\ndef f(x):\n    """Root."""\n    return math.sqrt(x)\n\nassert f(4) == 2\n')
    assert ex.prompt.endswith('"""Root."""\n') and ex.completion == "    return math.sqrt(x)\n"
    assert ex.tests == "assert f(4) == 2\n"


@pytest.mark.slow
def test_quality_label_killed_midway_resumes_without_duplicates(tmp_path, run_cli, stdlib_dir):
    files = sorted(str(p) for p in stdlib_dir.glob("*.py") if 2000 < p.stat().st_size < 20000)[:10]
    out = tmp_path / "labels.jsonl"
    with FakeOpenAI(delay_s=0.25, slow_s=1.5) as server:
        args = [
            "quality",
            "label",
            *files,
            "-o",
            str(out),
            "--endpoint",
            server.url,
            "--model",
            "fake",
            "--concurrency",
            "2",
            "--yes",
            *FAST_RETRY,
        ]
        _kill_after_lines(args, out, 3, tmp_path)
        killed_at = len(_read_jsonl(out))
        assert 3 <= killed_at < len(files)
        run_cli(*args, check=True)
    records = _read_jsonl(out)
    assert len(records) == len(files) == len({r["id"] for r in records})
    assert sorted(r["origin"] for r in records) == files
    assert all(r["score"] is not None and r["label"] in (0, 1) for r in records)
    summary = json.loads((tmp_path / "labels.jsonl.summary.json").read_text())
    assert summary["already_done"] >= killed_at and summary["failed"] == 0
    assert server.events["http_500"] >= 1 and server.events["slow"] >= 1


def test_label_resumes_after_a_torn_last_line(tmp_path):
    out = tmp_path / "labels.jsonl"
    docs = [(f'"""Doc {i}."""\n# comment\nx = {i}\n', f"doc{i}.py") for i in range(4)]
    with FakeOpenAI(faults=False) as server:
        first = label_documents(docs[:2], str(out), _endpoint(server.url), LabelConfig(concurrency=1))
        with open(out, "a") as handle:
            handle.write('{"id": "torn", "te')  # a write cut off by a kill
        second = label_documents(docs, str(out), _endpoint(server.url), LabelConfig(concurrency=1))
    assert first["labelled"] == 2 and second["already_done"] == 2 and second["labelled"] == 2
    assert second["repaired_bytes"] > 0
    assert [r["origin"] for r in _read_jsonl(out)] == [f"doc{i}.py" for i in range(4)]


def test_label_cli_errors_are_one_line(tmp_path, run_cli):
    template = tmp_path / "t.txt"
    template.write_text("no placeholder")
    proc = run_cli(
        "quality",
        "label",
        str(tmp_path),
        "-o",
        str(tmp_path / "x.jsonl"),
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--prompt-template",
        str(template),
    )
    assert proc.returncode == 2 and "{code}" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(
        "synth", "textbook", "-o", str(tmp_path / "x.jsonl"), "-n", "3", "--endpoint", "gpu:8000", "--model", "m"
    )
    assert proc.returncode == 2 and "not an http(s) URL" in proc.stderr
    assert run_cli("quality", "label", "--print-template", check=True).stdout.count("{code}") == 1
    assert "{topic}" in run_cli("synth", "exercises", "--print-template", check=True).stdout
    proc = run_cli("synth", "exercises", "-o", str(tmp_path / "x.jsonl"), "-n", "3")
    assert proc.returncode == 2 and "--endpoint and --model are required" in proc.stderr
    proc = run_cli(
        "synth",
        "textbook",
        "-o",
        str(tmp_path / "x.jsonl"),
        "-n",
        "3",
        "--endpoint",
        "http://x/v1",
        "--model",
        "m",
        "--prompt-template",
        str(template),
    )
    assert proc.returncode == 2 and "lacks {topic}" in proc.stderr


def test_synth_uses_a_custom_template(tmp_path):
    template = "Write a textbook page about {topic} for {audience} ({style}; {constraint})"
    with FakeOpenAI(faults=False) as server:
        synthesize(
            str(tmp_path / "t.jsonl"), _endpoint(server.url), SynthConfig(kind="textbook", count=3, template=template)
        )
        prompts = list(server.seen)
    assert len(prompts) == 3 and all(p.startswith("Write a textbook page about ") for p in prompts)
    assert "{" not in "".join(prompts)


def test_client_honours_retry_after_within_the_cap():
    waits: list[float] = []
    with FakeOpenAI(faults=False, throttle_first=2.0) as server:
        config = EndpointConfig(base_url=server.url, model="fake", max_retries=2, backoff_s=0.01, max_backoff_s=5)
        client = ChatClient(config, sleep=waits.append)
        assert client.chat([{"role": "user", "content": "educational value ```x```"}]).startswith("Score:")
        capped = ChatClient(
            EndpointConfig(base_url=server.url, model="fake", max_retries=2, backoff_s=0.01, max_backoff_s=0.5),
            sleep=waits.append,
        )
        capped.chat([{"role": "user", "content": "educational value ```y```"}])
    assert waits == [2.0, 0.5]  # the server's Retry-After, then the same clipped to --max-backoff
    assert client.retries["http_429"] == 1


def test_label_sample_is_seeded_uniform_and_streamed():
    from phi_hpc.quality.label import sample_documents

    docs = [(f"x = {i}\n", f"f{i}.py") for i in range(1000)]
    first = sample_documents(iter(docs), 50, seed=3)
    assert first == sample_documents(iter(docs), 50, seed=3) and len(set(first)) == 50
    assert first != sample_documents(iter(docs), 50, seed=4)
    assert set(first) <= set(docs) and max(int(o[1:-3]) for _, o in first) > 500  # not just the head
    assert sample_documents(iter(docs[:10]), 50, seed=3) == docs[:10]
