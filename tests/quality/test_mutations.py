"""Decontamination measured on the mutation suite and the stdlib (acceptance 4), plus the section 5
workflow: tau sweep, per-problem table, cleaned output, `eval score --exclude`, thresholds from prepare,
and the LM embedding distance with a tiny local model."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from phi_hpc.quality.decontaminate import DecontaminationConfig, build_decontaminator
from tests.quality.mutations import mutation_suite, recall_by_bucket
from tests.quality.planting import humaneval_problems, plant


@pytest.fixture(scope="module")
def suite(humaneval_path):
    return mutation_suite(humaneval_problems(humaneval_path), per_problem=4, seed=0)


def _host() -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")


def _recall(decontaminator, suite):
    host = _host()
    flagged = [decontaminator.check(plant(host, m["text"])) is not None for m in suite]
    return {row["bucket"]: row for row in recall_by_bucket(suite, flagged)}


@pytest.mark.slow
def test_mutation_suite_covers_every_bucket(suite):
    rows = recall_by_bucket(suite, [False] * len(suite))
    assert all(row["mutants"] >= 40 for row in rows), rows  # enough mutants to measure each bucket
    assert all("renamed_" in m["text"] and '"""' not in m["text"] for m in suite)


@pytest.mark.slow
def test_recall_at_similarity_0_9_is_at_least_0_95(shared_data, suite):
    decontaminator = build_decontaminator(str(shared_data))
    rows = _recall(decontaminator, suite)
    high = [rows["[0.95, 1.00]"], rows["[0.90, 0.95)"]]
    found, total = sum(r["found"] for r in high), sum(r["mutants"] for r in high)
    assert found / total >= 0.95, rows
    # The host alone is clean: the hits are the planted mutants, not the file around them.
    assert decontaminator.check(_host()) is None


@pytest.mark.slow
def test_lowering_tau_loosens_the_prefilter_and_finds_the_0_8_bucket(shared_data, suite):
    config = DecontaminationConfig(ast_threshold=0.8)
    assert config.prefilter_containment < DecontaminationConfig().prefilter_containment
    rows = _recall(build_decontaminator(str(shared_data), ast_threshold=0.8), suite)
    assert rows["[0.85, 0.90)"]["recall"] >= 0.9 and rows["[0.80, 0.85)"]["recall"] >= 0.85, rows
    # With the old fixed pre-filter (0.75 containment) the same tau misses most of them.
    fixed = _recall(build_decontaminator(str(shared_data), ast_threshold=0.8, skeleton_containment=0.75), suite)
    assert fixed["[0.80, 0.85)"]["recall"] < rows["[0.80, 0.85)"]["recall"] - 0.3, fixed


@pytest.mark.slow
def test_decontaminate_sweep_table_and_clean_copy(tmp_path, run_cli, shared_data, suite, stdlib_dir):
    corpus = tmp_path / "corpus.jsonl"
    clean_texts = [(stdlib_dir / n).read_text() for n in ("textwrap.py", "shlex.py", "fractions.py", "calendar.py")]
    picked = [m for m in suite if m["similarity"] >= 0.95][:3] + [m for m in suite if 0.8 <= m["similarity"] < 0.85][:3]
    rows = [{"text": t} for t in clean_texts] + [{"text": plant(clean_texts[0], m["text"])} for m in picked]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.jsonl"
    run_cli(
        "decontaminate",
        str(corpus),
        "-o",
        str(out),
        "--benchmark-data",
        str(shared_data),
        "--sweep",
        "0.95,0.9,0.85,0.8",
        "--write-clean",
        str(tmp_path / "clean.jsonl"),
        check=True,
    )
    summary = json.loads((tmp_path / "report.jsonl.summary.json").read_text())
    sweep = {row["tau"]: row for row in summary["sweep"]}
    assert list(sweep) == [0.95, 0.9, 0.85, 0.8]
    assert sweep[0.95]["documents_flagged"] >= 3 and sweep[0.8]["documents_flagged"] >= 5
    assert sweep[0.8]["documents_flagged"] > sweep[0.9]["documents_flagged"]  # a lower tau flags more
    assert summary["flagged"] == sweep[0.9]["documents_flagged"]  # the main tau is the default 0.9
    clean = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert len(clean) == summary["documents"] - summary["flagged"] and len(clean) >= 4
    table = [json.loads(line) for line in (tmp_path / "report.jsonl.problems.jsonl").read_text().splitlines()]
    assert len(table) > 164 + 900  # every HumanEval and MBPP problem has a row
    dirty = {r["problem"] for r in table if r["contaminated"]}
    assert {m["problem"] for m in picked[:3]} <= dirty
    assert all(r["ast"]["0.8"] >= r["ast"]["0.95"] for r in table)

    # eval score --exclude: the contaminated problems are left out of pass@k.
    from phi_hpc.eval.score import read_problem_list

    assert read_problem_list(str(tmp_path / "report.jsonl.problems.jsonl")) == dirty
    assert read_problem_list("HumanEval/1,HumanEval/2") == {"HumanEval/1", "HumanEval/2"}


@pytest.mark.slow
def test_thresholds_are_settable_from_prepare(tmp_path, run_cli, stdlib_dir, codegen_tokenizer, shared_data, suite):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "host.py").write_text((stdlib_dir / "shlex.py").read_text())
    mutant = next(m for m in suite if 0.83 <= m["similarity"] < 0.88)  # below the default tau, above 0.8
    (corpus / "leak.py").write_text(plant((stdlib_dir / "textwrap.py").read_text(), mutant["text"]))
    common = [
        str(corpus),
        "--tokenizer",
        str(codegen_tokenizer),
        "--workers",
        "1",
        "--decontaminate",
        "--benchmark-data",
        str(shared_data),
    ]
    run_cli("prepare", *common, "-o", str(tmp_path / "default"), check=True)
    run_cli("prepare", *common, "-o", str(tmp_path / "loose"), "--set", "decontamination.ast_threshold=0.8", check=True)
    default, loose = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("default", "loose"))
    assert default["counts"]["filtered"].get("decontamination", 0) == 0
    assert loose["counts"]["filtered"]["decontamination"] == 1
    proc = run_cli("prepare", *common, "-o", str(tmp_path / "bad"), "--set", "decontamination.ast_threshold=3")
    assert proc.returncode == 2 and "ast_threshold" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_lm_embedding_distance_with_a_tiny_local_model(tmp_path, shared_data, codegen_tokenizer, humaneval_path):
    from tests.quality.test_classifier import _tiny_phi

    folder = _tiny_phi(tmp_path / "tiny-phi")
    problems = humaneval_problems(humaneval_path)
    decon = build_decontaminator(
        str(shared_data),
        embedding_threshold=0.999,
        embedding_model=str(folder),
        embedding_tokenizer=str(codegen_tokenizer),
        embedding_max_tokens=128,
    )
    assert decon.has_embedding
    solution = problems[3]["prompt"] + problems[3]["canonical_solution"]
    unrelated = "import os\n\ndef list_dir(p):\n    return sorted(os.listdir(p))\n"
    findings = decon.embedding_findings([solution, unrelated])
    assert findings[0] is not None and findings[0].problem == "HumanEval/3" and findings[0].method == "embedding"
    assert findings[1] is None


def test_eval_score_exclude_scores_the_uncontaminated_subset(tmp_path, run_cli, humaneval_path):
    problems = humaneval_problems(humaneval_path)[:3]
    samples = tmp_path / "samples.jsonl"
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems[:2]]
    rows.append({"task_id": problems[2]["task_id"], "completion": "    return None\n"})
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = tmp_path / "report.jsonl.problems.jsonl"
    table.write_text(
        json.dumps({"problem": "HumanEval/2", "contaminated": True})
        + "\n"
        + json.dumps({"problem": "HumanEval/1", "contaminated": False})
        + "\n"
    )
    common = [
        "eval",
        "score",
        str(samples),
        "--task",
        "humaneval",
        "--data",
        str(humaneval_path),
        "--k",
        "1",
        "--isolation",
        "rlimits",
    ]
    run_cli(*common, "-o", str(tmp_path / "all.jsonl"), check=True)
    run_cli(*common, "-o", str(tmp_path / "clean.jsonl"), "--exclude", str(table), check=True)
    everything = json.loads((tmp_path / "all.summary.json").read_text())
    clean = json.loads((tmp_path / "clean.summary.json").read_text())
    assert everything["pass@1"] == pytest.approx(2 / 3) and clean["pass@1"] == 1.0
    assert clean["excluded_problems"] == ["HumanEval/2"] and clean["problems_attempted"] == 2
    proc = run_cli(*common, "--exclude", "HumanEval/999")
    assert proc.returncode == 2 and "HumanEval/999" in proc.stderr and "Traceback" not in proc.stderr
