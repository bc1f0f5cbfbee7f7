"""Acceptance 1: benchmark solutions planted in real code are found, untouched real code is not flagged."""

from __future__ import annotations

import json

import pytest

from phi_hpc.errors import UsageError
from phi_hpc.quality import code_ast
from phi_hpc.quality.decontaminate import DecontaminationConfig, Decontaminator, build_decontaminator
from phi_hpc.quality.stages import build_decontamination_filter
from tests.quality.planting import disguise, humaneval_problems, plant

HOSTS = ["textwrap.py", "shlex.py", "fractions.py", "calendar.py"]


@pytest.fixture(scope="module")
def decontaminator(shared_data) -> Decontaminator:
    return build_decontaminator(str(shared_data))


@pytest.fixture(scope="module")
def problems(humaneval_path):
    return humaneval_problems(humaneval_path)


def _hosts(stdlib_dir):
    return [(stdlib_dir / name).read_text(encoding="utf-8") for name in HOSTS]


def test_verbatim_humaneval_solutions_are_found(decontaminator, problems, stdlib_dir):
    hosts = _hosts(stdlib_dir)
    found = 0
    for i, problem in enumerate(problems):
        doc = plant(hosts[i % len(hosts)], problem["prompt"] + problem["canonical_solution"])
        finding = decontaminator.check(doc)
        found += bool(finding and finding.problem == problem["task_id"])
    # One HumanEval problem (34, `return sorted(list(set(l)))` under a 2-line docstring) has no 13-gram
    # naming three distinct non-builtin things, so no n-gram of it is evidence; it is also too small
    # for the structural check.
    assert found >= len(problems) - 1, f"found {found}/{len(problems)}"


def test_renamed_and_reformatted_solutions_are_found(decontaminator, problems, stdlib_dir):
    hosts = _hosts(stdlib_dir)
    min_tokens = decontaminator.config.ast_min_tokens
    eligible = found = found_eligible = 0
    missed = []
    for i, problem in enumerate(problems):
        source = problem["prompt"] + problem["canonical_solution"]
        disguised = disguise(source)
        assert "renamed_" in disguised and '"""' not in disguised  # really renamed, docstring gone
        entry = next(
            f for f in code_ast.iter_functions(code_ast.parse_python(source)) if f.name == problem["entry_point"]
        )
        big_enough = len(code_ast.function_fingerprint(entry)) >= min_tokens
        finding = decontaminator.check(plant(hosts[i % len(hosts)], disguised))
        hit = bool(finding and problem["task_id"] in finding.problem.split(","))
        found += hit
        eligible += big_enough
        found_eligible += hit and big_enough
        if big_enough and not hit:
            missed.append(problem["task_id"])
    assert eligible >= 0.75 * len(problems)
    assert not missed, f"disguised solutions above the size threshold not found: {missed}"
    assert found >= 0.8 * len(problems), f"found {found}/{len(problems)}"


def test_disguised_solution_is_reported_with_problem_and_similarity(decontaminator, problems, stdlib_dir):
    problem = problems[0]
    doc = plant(_hosts(stdlib_dir)[0], disguise(problem["prompt"] + problem["canonical_solution"]))
    finding = decontaminator.check(doc)
    assert finding.problem == "HumanEval/0" and finding.method == "ast" and finding.score >= 0.9
    assert "HumanEval/0" in finding.reason() and "AST similarity" in finding.reason()


def test_mbpp_tests_leaked_into_a_file_are_found(decontaminator, mbpp_path, stdlib_dir):
    rows = [json.loads(line) for line in mbpp_path.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["task_id"] == 17)
    doc = plant(_hosts(stdlib_dir)[1], "def test_leak():\n    " + "\n    ".join(row["test_list"]))
    finding = decontaminator.check(doc)
    assert finding is not None and finding.problem == "MBPP/17" and "test" in finding.detail


@pytest.mark.slow
def test_untouched_stdlib_is_almost_never_flagged(decontaminator, stdlib_dir):
    files = [p for p in sorted(stdlib_dir.rglob("*.py")) if "site-packages" not in p.parts]
    texts = []
    for path in files:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    assert len(texts) > 1000
    flagged = [(files[i], f.reason()) for i, f in enumerate(decontaminator.check_many(texts)) if f]
    assert len(flagged) <= 0.005 * len(texts), flagged[:10]


def test_filter_drops_or_reports(shared_data, problems, stdlib_dir):
    host = _hosts(stdlib_dir)[2]
    dirty = plant(host, problems[5]["prompt"] + problems[5]["canonical_solution"])
    dropping = build_decontamination_filter(str(shared_data), report_only=False)
    assert dropping.name == "decontamination"
    clean, flagged = dropping.evaluate([host, dirty])
    assert clean.keep and not clean.reason
    assert not flagged.keep and "HumanEval/5" in flagged.reason and flagged.score > 0
    reporting = build_decontamination_filter(str(shared_data), report_only=True)
    _, reported = reporting.evaluate([host, dirty])
    assert reported.keep and "HumanEval/5" in reported.reason


def test_embedding_distance_is_optional_and_flags_near_copies(shared_data, problems):
    config = DecontaminationConfig(embedding_threshold=0.95)
    from phi_hpc.quality.benchmarks import load_benchmarks

    decon = Decontaminator(load_benchmarks(str(shared_data)), config)
    solution = problems[3]["prompt"] + problems[3]["canonical_solution"]
    unrelated = "import os\n\ndef list_dir(p):\n    return sorted(os.listdir(p))\n"
    flags = decon.check_many([solution, unrelated])
    assert flags[0] is not None and flags[0].problem == "HumanEval/3"
    assert flags[1] is None


def test_missing_benchmark_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found") as missing:
        build_decontaminator(str(tmp_path / "nope"))
    assert "--benchmark-data" in missing.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no HumanEval/MBPP files"):
        build_decontaminator(str(tmp_path / "empty"))


def test_index_cache_is_reused_and_survives_damage(shared_data, problems, stdlib_dir, tmp_path):
    cache = tmp_path / "cache"
    first = build_decontaminator(str(shared_data), cache_dir=cache)
    files = list(cache.glob("index-*.npz"))
    assert len(files) == 1
    second = build_decontaminator(str(shared_data), cache_dir=cache)
    docs = [
        plant(_hosts(stdlib_dir)[0], disguise(problems[0]["prompt"] + problems[0]["canonical_solution"])),
        plant(_hosts(stdlib_dir)[1], problems[7]["prompt"] + problems[7]["canonical_solution"]),
        _hosts(stdlib_dir)[2],
    ]
    assert first.check_many(docs) == second.check_many(docs)
    assert [f and f.problem for f in second.check_many(docs)] == ["HumanEval/0", "HumanEval/7", None]
    files[0].write_bytes(b"damaged")
    third = build_decontaminator(str(shared_data), cache_dir=cache)
    assert third.check_many(docs) == first.check_many(docs)
    # Other settings are other indexes, not a stale hit.
    build_decontaminator(str(shared_data), cache_dir=cache, ngram=10)
    assert len(list(cache.glob("index-*.npz"))) == 2


def test_code_blocks_of_a_textbook_are_checked_structurally(decontaminator, problems):
    problem = problems[0]
    chapter = (
        "# Comparing every pair\n\nSometimes we must look at every pair of items in a list.\n\n"
        "```python\n" + disguise(problem["prompt"] + problem["canonical_solution"]) + "\n```\n\n"
        "Note how the inner loop skips the element itself. Try it on `[1.0, 2.0]`.\n"
    )
    assert code_ast.parse_python(chapter) is None  # markdown: only its code block is Python
    finding = decontaminator.check(chapter)
    assert finding is not None and finding.method == "ast" and finding.problem == "HumanEval/0"
    def_line = next(i for i, line in enumerate(chapter.splitlines(), 1) if line.startswith("def "))
    assert f"(line {def_line})" in finding.detail  # where the function sits in the chapter, not in its block
