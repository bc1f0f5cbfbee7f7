"""The quality CLI as users run it: `quality train`, `decontaminate`, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np

from phi_hpc.quality.classifier import QualityModel
from tests.quality.corpus import labelled_set
from tests.quality.planting import humaneval_problems, plant


def test_quality_train_cli_writes_a_model_and_a_report(tmp_path, run_cli, stdlib_dir):
    texts, labels = labelled_set(stdlib_dir, count=40, seed=7)
    labels_path = tmp_path / "labels.jsonl"
    with open(labels_path, "w") as handle:
        for text, label in zip(texts, labels):
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    model = tmp_path / "model.npz"
    proc = run_cli("quality", "train", str(labels_path), "-o", str(model), "--dim", "512", "--trees", "30", check=True)
    assert "heldout accuracy" in proc.stderr
    report = json.loads((tmp_path / "model.npz.report.json").read_text())
    assert report["examples"] == 80 and report["heldout_n"] == 16
    assert report["heldout_accuracy"] >= 0.8
    loaded = QualityModel.load(model)
    assert loaded.embedder.kind == "hashed" and loaded.embedder.dim == 512 and loaded.feature_width > 512
    assert np.isclose(loaded.report["heldout"]["accuracy"], report["heldout_accuracy"])


def test_quality_train_cli_errors(tmp_path, run_cli):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"text": "x = 1", "label": 1}\n{"text": "y = 2", "label": 1}\n')
    proc = run_cli("quality", "train", str(labels), "-o", str(tmp_path / "m.npz"))
    assert proc.returncode == 2 and "need both labels" in proc.stderr and "Traceback" not in proc.stderr
    labels.write_text('{"text": "x = 1", "label": 1}\nnot json\n')
    proc = run_cli("quality", "train", str(labels), "-o", str(tmp_path / "m.npz"))
    assert proc.returncode == 2 and "labels.jsonl:2" in proc.stderr
    proc = run_cli("quality", "train", str(labels), "-o", str(tmp_path / "m.npz"), "--embedder", "lm")
    assert proc.returncode == 2 and "--model-dir" in proc.stderr
    assert not (tmp_path / "m.npz").exists()


def test_decontaminate_cli_reports_flagged_documents(tmp_path, run_cli, stdlib_dir, shared_data, humaneval_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("textwrap.py", "shlex.py", "fractions.py"):
        (corpus / name).write_text((stdlib_dir / name).read_text())
    problem = humaneval_problems(humaneval_path)[12]
    (corpus / "leak.py").write_text(
        plant((stdlib_dir / "calendar.py").read_text(), problem["prompt"] + problem["canonical_solution"])
    )
    report = tmp_path / "report.jsonl"
    run_cli("decontaminate", str(corpus), "-o", str(report), "--benchmark-data", str(shared_data), check=True)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(row["document"].rsplit("/", 1)[-1], row["problem"]) for row in lines] == [("leak.py", "HumanEval/12")]
    assert lines[0]["method"] == "ngram" and "13-grams" in lines[0]["reason"]
    leak = (corpus / "leak.py").read_text().splitlines()
    planted_at = leak.index("from typing import List, Optional") + 1  # where the copied prompt begins
    assert lines[0]["reason"].endswith(f"from line {planted_at}"), lines[0]["reason"]
    summary = json.loads((tmp_path / "report.jsonl.summary.json").read_text())
    assert summary["documents"] == 4 and summary["flagged"] == 1 and summary["by_method"] == {"ngram": 1}

    proc = run_cli("decontaminate", str(corpus), "-o", str(report), "--benchmark-data", str(tmp_path / "none"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_quality_train_cli_with_the_lm_embedder(tmp_path, run_cli, stdlib_dir, codegen_tokenizer):
    from tests.quality.test_classifier import _tiny_phi

    folder = _tiny_phi(tmp_path / "tiny-phi")
    texts, labels = labelled_set(stdlib_dir, count=10, seed=9)
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    model = tmp_path / "lm.npz"
    run_cli(
        "quality",
        "train",
        str(labels_path),
        "-o",
        str(model),
        "--embedder",
        "lm",
        "--model-dir",
        str(folder),
        "--tokenizer",
        str(codegen_tokenizer),
        "--max-tokens",
        "64",
        "--trees",
        "10",
        "--holdout",
        "0.3",
        check=True,
    )
    loaded = QualityModel.load(model)
    assert loaded.embedder.kind == "lm" and loaded.feature_width == 32
    assert loaded.embedder.model_dir == str(folder) and loaded.embedder.max_tokens == 64
