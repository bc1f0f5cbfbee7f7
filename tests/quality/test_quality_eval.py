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

    algorithm = 'def gcd(a, b):\n    """Greatest common divisor."""\n    while b:\n        a, b = b, a % b\n    return a\n'
    config = "DEBUG = True\nNAME = 'x'\nPORT = 8000\n"
    assert category(Path("pkg/util.py"), algorithm, ast.parse(algorithm)) == "algorithms"
    assert category(Path("pkg/tests/test_util.py"), algorithm, ast.parse(algorithm)) == "tests"
    assert category(Path("pkg/settings.py"), config, ast.parse(config)) == "configs"
    assert category(Path("pkg/api_pb2.py"), config, ast.parse(config)) == "generated"
    assert category(Path("pkg/cli.py"), "if __name__ == '__main__':\n    main()\n",
                    ast.parse("if __name__ == '__main__':\n    main()\n")) == "scripts"
    assert score(Path("pkg/util.py"), algorithm)[0] > score(Path("pkg/settings.py"), config)[0] + 4
    # Comments move a config's label little: the rubric reads the code, not its comments.
    commented = quality_eval.add_comments(config)
    assert abs(score(Path("pkg/settings.py"), commented)[0] - score(Path("pkg/settings.py"), config)[0]) <= 1.0
    assert score(Path("pkg/bad.py"), "def (:\n") is None


@pytest.mark.slow
def test_shipped_scorer_beats_every_single_feature_rule_on_held_out_packages():
    import site

    args = Namespace(site_packages=site.getsitepackages()[0], per_category=40, seed=0, trees=80, no_lm=True,
                     lm_tokens=64)
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
