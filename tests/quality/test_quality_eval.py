"""Acceptance 1 in small: on rubric-labelled site-packages files, held out by package, the shipped
scorer (hashed embedder + forest regression) beats every single-feature rule in rank correlation by a
clear margin, and is not moved by comments. The full run is benchmarks/quality_eval.py."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import quality_eval  # noqa: E402
from quality_rubric import category, score  # noqa: E402


def test_rubric_categories_and_scores():
    import ast

    algorithm = (
        'def gcd(a, b):\n    """Greatest common divisor."""\n    while b:\n        a, b = b, a % b\n    return a\n'
    )
    config = "DEBUG = True\nNAME = 'x'\nPORT = 8000\n"
    assert category(Path("pkg/util.py"), algorithm, ast.parse(algorithm)) == "algorithms"
    assert category(Path("pkg/tests/test_util.py"), algorithm, ast.parse(algorithm)) == "tests"
    assert category(Path("pkg/settings.py"), config, ast.parse(config)) == "configs"
    assert category(Path("pkg/api_pb2.py"), config, ast.parse(config)) == "generated"
    assert (
        category(
            Path("pkg/cli.py"),
            "if __name__ == '__main__':\n    main()\n",
            ast.parse("if __name__ == '__main__':\n    main()\n"),
        )
        == "scripts"
    )
    assert score(Path("pkg/util.py"), algorithm)[0] > score(Path("pkg/settings.py"), config)[0] + 4
    # Comments move a config's label little: the rubric reads the code, not its comments.
    commented = quality_eval.add_comments(config)
    assert abs(score(Path("pkg/settings.py"), commented)[0] - score(Path("pkg/settings.py"), config)[0]) <= 1.0
    assert score(Path("pkg/bad.py"), "def (:\n") is None


@pytest.mark.slow
def test_shipped_scorer_beats_every_single_feature_rule_on_held_out_packages():
    import site

    args = Namespace(
        site_packages=site.getsitepackages()[0], per_category=40, seed=0, trees=80, no_lm=True, lm_tokens=64
    )
    result = quality_eval.run(args)
    assert result["files"] >= 150 and result["test"] >= 30
    shipped = result["models"]["hashed+forest_score"]
    best = max(r["spearman"] for r in result["rules"])
    assert shipped["spearman"] >= best + 0.15, (shipped, result["best_rule"], best)
    good = result["counterfactuals"]["good code, comments stripped"]
    if good:  # stripping comments from good code does not push it out of the kept set
        assert good["model_kept_after"] >= good["model_kept_before"] - 0.2, good
    configs = result["counterfactuals"]["configs, comments added"]
    assert configs["model_kept_after"] <= 0.2, configs  # commenting a config does not get it kept


def test_quality_train_regresses_scores_with_a_grouped_holdout(tmp_path, run_cli, stdlib_dir):
    import json

    from phi_hpc.quality.classifier import QualityModel
    from phi_hpc.quality.stages import build_quality_filter
    from tests.quality.corpus import labelled_set

    texts, labels = labelled_set(stdlib_dir, count=30, seed=5)
    lines = [
        {"text": t, "score": 8.0 - i % 3 if y else 1.0 + i % 3, "label": y, "origin": f"repo{i % 6}/pkg/m{i}.py"}
        for i, (t, y) in enumerate(zip(texts, labels))
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_cli("quality", "train", str(path), "-o", str(tmp_path / "m.npz"), "--trees", "30", "--dim", "512", check=True)
    report = json.loads((tmp_path / "m.npz.report.json").read_text())
    assert report["target"] == "score" and report["report"]["grouped"] is True  # auto: the lines carry scores
    assert report["heldout_spearman"] > 0.5 and 0 < report["heldout_n"] < len(lines)
    model = QualityModel.load(tmp_path / "m.npz")
    assert model.report["target"] == "score"
    quality = build_quality_filter(str(tmp_path / "m.npz"), 5.0)  # a grade to cut at, not a probability
    kept = [v.keep for v in quality.evaluate(texts[:10])]
    assert any(kept) and not all(kept)
    run_cli(
        "quality",
        "train",
        str(path),
        "-o",
        str(tmp_path / "b.npz"),
        "--trees",
        "10",
        "--dim",
        "512",
        "--target",
        "binary",
        check=True,
    )
    assert json.loads((tmp_path / "b.npz.report.json").read_text())["target"] == "binary"


def test_downstream_parts_hold_whole_packages_once():
    import quality_downstream

    rows = [{"group": f"pkg{i % 13}"} for i in range(400)]
    parts = quality_downstream.split_packages(rows, seed=3)
    indices = sorted(i for part in parts.values() for i in part)
    assert indices == list(range(400))  # every file in exactly one part
    owners = {}
    for name, part in parts.items():
        for i in part:
            owners.setdefault(rows[i]["group"], set()).add(name)
    assert all(len(v) == 1 for v in owners.values())  # no package on two sides
    assert all(parts.values())  # A (labels), B (pool) and C (validation) all get packages
