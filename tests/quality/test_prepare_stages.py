"""Acceptance 4: `prepare` with the quality and decontamination stages on a stdlib corpus."""

from __future__ import annotations

import json

import pytest

from phi_hpc.quality.classifier_training import TrainConfig, train_classifier
from phi_hpc.quality.embedders import EmbedderSpec
from tests.quality.corpus import documented_stdlib_files, obfuscate
from tests.quality.planting import disguise, humaneval_problems, plant


@pytest.mark.slow
def test_prepare_filters_low_quality_and_contaminated_documents(
    tmp_path, run_cli, stdlib_dir, shared_data, codegen_tokenizer, humaneval_path
):
    documented = documented_stdlib_files(stdlib_dir, count=190, seed=3)
    train_files, corpus_files = documented[:120], documented[120:]
    # The classifier: documented files vs their stripped, obfuscated twins (as in acceptance 2).
    texts = [t for f in train_files for t in (f, obfuscate(f))]
    model = train_classifier(texts, [1, 0] * len(train_files), EmbedderSpec(dim=1024), TrainConfig(trees=60))
    model.save(tmp_path / "quality.npz")

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    clean, low, hosts = corpus_files[:50], corpus_files[50:62], corpus_files[62:64]
    for i, text in enumerate(clean):
        (corpus / f"clean_{i:03d}.py").write_text(text)
    for i, text in enumerate(low):
        (corpus / f"obfuscated_{i:03d}.py").write_text(obfuscate(text))
    problems = humaneval_problems(humaneval_path)
    (corpus / "contaminated_verbatim.py").write_text(
        plant(hosts[0], problems[10]["prompt"] + problems[10]["canonical_solution"])
    )
    (corpus / "contaminated_disguised.py").write_text(
        plant(hosts[1], disguise(problems[0]["prompt"] + problems[0]["canonical_solution"]))
    )

    out = tmp_path / "out"
    run_cli(
        "prepare",
        str(corpus),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
        "--workers",
        "1",
        "--quality-model",
        str(tmp_path / "quality.npz"),
        "--quality-threshold",
        "0.5",
        "--decontaminate",
        "--benchmark-data",
        str(shared_data),
        check=True,
    )

    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    filtered = {e["document"].rsplit("/", 1)[-1]: e for e in audit if e["removed"] == "filtered"}

    decontaminated = {name: e for name, e in filtered.items() if e["filter"] == "decontamination"}
    assert set(decontaminated) == {"contaminated_verbatim.py", "contaminated_disguised.py"}
    assert "HumanEval/10" in decontaminated["contaminated_verbatim.py"]["reason"]
    assert "ngram" in decontaminated["contaminated_verbatim.py"]["reason"]
    assert "HumanEval/0" in decontaminated["contaminated_disguised.py"]["reason"]
    assert "AST similarity" in decontaminated["contaminated_disguised.py"]["reason"]

    by_quality = {name: e for name, e in filtered.items() if e["filter"] == "quality"}
    obfuscated_dropped = [n for n in by_quality if n.startswith("obfuscated_")]
    clean_dropped = [n for n in by_quality if n.startswith("clean_")]
    assert len(obfuscated_dropped) >= 10, sorted(by_quality)
    assert len(clean_dropped) <= 5, clean_dropped
    assert all("quality score" in e["reason"] and e["score"] < 0.5 for e in by_quality.values())

    kept_scores = {e["document"].rsplit("/", 1)[-1]: e["score"] for e in audit if e.get("scored_by") == "quality"}
    assert kept_scores and all(score >= 0.5 for score in kept_scores.values())
    assert set(kept_scores).isdisjoint(filtered)

    assert counts["filtered"] == {"decontamination": 2, "quality": len(by_quality)}
    assert counts["documents_in"] == 64
    assert counts["documents_out"] <= 64 - 2 - len(by_quality)


@pytest.mark.slow
def test_prepare_decontaminate_report_only_keeps_and_audits(
    tmp_path, run_cli, stdlib_dir, shared_data, codegen_tokenizer, humaneval_path
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("textwrap.py", "shlex.py", "fractions.py", "calendar.py"):
        (corpus / name).write_text((stdlib_dir / name).read_text())
    problem = humaneval_problems(humaneval_path)[20]
    (corpus / "leak.py").write_text(
        plant((stdlib_dir / "colorsys.py").read_text(), problem["prompt"] + problem["canonical_solution"])
    )
    out = tmp_path / "out"
    run_cli(
        "prepare",
        str(corpus),
        "--tokenizer",
        str(codegen_tokenizer),
        "-o",
        str(out),
        "--workers",
        "1",
        "--decontaminate",
        "--decontaminate-report-only",
        "--benchmark-data",
        str(shared_data),
        check=True,
    )
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["filtered"] == {} and counts["flagged"] == {"decontamination": 1}
    assert counts["documents_out"] == 5
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["document"].endswith("leak.py") and audit[0]["removed"] is None
    assert audit[0]["flagged_by"] == "decontamination" and "HumanEval/20" in audit[0]["reason"]
