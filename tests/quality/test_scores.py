"""Score once, cut later: `quality score` (sharded, resumable, Slurm array), `prepare --quality-scores`
giving the same output as inline filtering, and `quality threshold --target-tokens` within 2%."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from phi_hpc.quality.classifier_training import TrainConfig, train_classifier
from phi_hpc.quality.embedders import EmbedderSpec
from tests.launch.conftest import slurm_cluster  # noqa: F401  (the fixture)
from tests.quality.corpus import labelled_set


@pytest.fixture(scope="module")
def scored_setup(stdlib_dir, tmp_path_factory):
    """A hashed-embedder model and a corpus of ~150 small stdlib files in several folders."""
    root = tmp_path_factory.mktemp("scores")
    texts, labels = labelled_set(stdlib_dir, count=60, seed=3)
    # A quarter of the labels flipped, as noisy LLM labels would be: leaves are impure, so scores are
    # spread over many values rather than piled at 0 and 1 (a threshold cannot split tied documents).
    flip = np.random.default_rng(0).random(len(labels)) < 0.25
    labels = [int(y) ^ int(f) for y, f in zip(labels, flip)]
    model = train_classifier(
        texts, labels, EmbedderSpec(kind="hashed", dim=512), TrainConfig(trees=150, min_samples_leaf=5, seed=0)
    )
    model.save(root / "model.npz")
    corpus = root / "corpus"
    files = sorted(
        p
        for p in stdlib_dir.rglob("*.py")
        if 500 < p.stat().st_size < 24000
        and not {"test", "tests", "idlelib", "site-packages"} & set(p.relative_to(stdlib_dir).parts)
    )[:300]
    for i, path in enumerate(files):
        folder = corpus / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{i:03d}_{path.name}")
    return root, corpus, root / "model.npz"


def _score(run_cli, corpus, model, out, *extra, env=None, check=True):
    return run_cli(
        "quality",
        "score",
        str(corpus),
        "--model",
        str(model),
        "-o",
        str(out),
        "--shard-mb",
        "0.5",
        *extra,
        env=env,
        check=check,
    )


def _arrays(folder):
    shards = sorted(folder.glob("shard-*.npz"))
    out = {}
    for path in shards:
        with np.load(path) as data:
            out[path.name] = {k: data[k] for k in data.files}
    return out


@pytest.mark.slow
def test_score_is_resumable_after_a_kill(scored_setup, run_cli, codegen_tokenizer, tmp_path):
    _, corpus, model = scored_setup
    plan = json.loads(_score(run_cli, corpus, model, tmp_path / "plan", "--stage", "plan").stdout)
    assert plan["shards"] >= 3
    killed = tmp_path / "killed"
    proc = _score(
        run_cli,
        corpus,
        model,
        killed,
        "--tokenizer",
        str(codegen_tokenizer),
        env={"PHI_HPC_FAULT": "kill-in-score-shard:1"},
        check=False,
    )
    assert proc.returncode != 0
    assert [p.name for p in killed.iterdir() if p.name.startswith("shard")] == ["shard-00000.npz"]
    first_written = (killed / "shard-00000.npz").stat().st_mtime_ns
    assert not (killed / "summary.json").exists()
    done = json.loads(_score(run_cli, corpus, model, killed, "--tokenizer", str(codegen_tokenizer)).stdout)
    assert done["complete"] and done["shards"][0] == {"shard": 0, "skipped": True}
    assert (killed / "shard-00000.npz").stat().st_mtime_ns == first_written  # not recomputed
    clean = tmp_path / "clean"
    _score(run_cli, corpus, model, clean, "--tokenizer", str(codegen_tokenizer))
    got, expected = _arrays(killed), _arrays(clean)
    assert list(got) == list(expected) and len(got) == plan["shards"]
    for name in got:
        for key in ("ids", "digests", "scores", "tokens", "bytes"):
            np.testing.assert_array_equal(got[name][key], expected[name][key])
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["documents"] == len(list(corpus.rglob("*.py"))) and summary["tokens"] > 0
    # Another model into the same folder is refused (its scores would be mixed with the old ones).
    other = tmp_path / "other.npz"
    other.write_bytes(model.read_bytes() + b"\0")
    proc = _score(run_cli, corpus, other, killed, check=False)
    assert proc.returncode == 2 and "another model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_prepare_on_stored_scores_equals_inline_filtering(scored_setup, run_cli, codegen_tokenizer, tmp_path):
    _, corpus, model = scored_setup
    scores = tmp_path / "scores"
    _score(run_cli, corpus, model, scores)
    from phi_hpc.quality.scoring import load_scores

    median = repr(float(np.median(load_scores(scores).scores)))  # a cut that drops about half
    common = [str(corpus), "--tokenizer", str(codegen_tokenizer), "--workers", "1", "--quality-threshold", median]
    run_cli("prepare", *common, "-o", str(tmp_path / "inline"), "--quality-model", str(model), check=True)
    run_cli("prepare", *common, "-o", str(tmp_path / "stored"), "--quality-scores", str(scores), check=True)
    inline, stored = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("inline", "stored"))
    assert inline["counts"] == stored["counts"]
    assert inline["counts"]["filtered"]["quality"] > 0  # the cut really removed documents
    assert [o["sha256"] for o in inline["outputs"]] == [o["sha256"] for o in stored["outputs"]]
    assert (tmp_path / "inline/audit.jsonl").read_bytes() == (tmp_path / "stored/audit.jsonl").read_bytes()

    # Scores of other inputs: a document without a score is an error, not a silent keep.
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "new.py").write_text("def brand_new():\n    return 42\n")
    proc = run_cli(
        "prepare",
        str(corpus),
        str(extra),
        "--tokenizer",
        str(codegen_tokenizer),
        "--workers",
        "1",
        "-o",
        str(tmp_path / "bad"),
        "--quality-scores",
        str(scores),
    )
    assert proc.returncode == 2 and "has no score" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_threshold_hits_the_token_budget(scored_setup, run_cli, codegen_tokenizer, tmp_path):
    _, corpus, model = scored_setup
    scores = tmp_path / "scores"
    _score(run_cli, corpus, model, scores, "--tokenizer", str(codegen_tokenizer))
    summary = json.loads((scores / "summary.json").read_text())
    target = int(summary["tokens"] * 0.3)
    proc = run_cli("quality", "threshold", str(scores), "--target-tokens", str(target), "--json", check=True)
    result = json.loads(proc.stdout)
    choice = result["choice"]
    assert abs(choice["tokens"] - target) <= 0.02 * target, choice
    assert "keep rate" in proc.stderr and len(result["table"]) == 10
    # Independently: the documents prepare keeps at that threshold hold that many tokens.
    run_cli(
        "prepare",
        str(corpus),
        "--tokenizer",
        str(codegen_tokenizer),
        "--workers",
        "1",
        "-o",
        str(tmp_path / "cut"),
        "--quality-scores",
        str(scores),
        "--quality-threshold",
        repr(choice["threshold"]),
        "--set",
        "dedup.exact=false",
        "--set",
        "dedup.near=false",
        check=True,
    )
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["counts"]["tokens"] == choice["tokens"], (manifest["counts"], choice)
    # From the audit of an inline run (threshold 0: everything scored) --target-keep works; tokens are refused.
    run_cli(
        "prepare",
        str(corpus),
        "--tokenizer",
        str(codegen_tokenizer),
        "--workers",
        "1",
        "-o",
        str(tmp_path / "all"),
        "--quality-model",
        str(model),
        "--quality-threshold",
        "0",
        check=True,
    )
    audit = json.loads(
        run_cli("quality", "threshold", str(tmp_path / "all"), "--target-keep", "0.17", "--json", check=True).stdout
    )
    everything = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert audit["kind"] == "audit" and audit["documents"] == everything["counts"]["documents_out"]
    assert abs(audit["choice"]["keep_rate"] - 0.17) < 0.02
    proc = run_cli("quality", "threshold", str(tmp_path / "all"), "--target-tokens", "1000")
    assert proc.returncode == 2 and "token counts" in proc.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_score_runs_as_a_slurm_array(scored_setup, slurm_cluster, tmp_path):
    from tests.launch.conftest import phi, wait_for

    _, corpus, model = scored_setup
    out, run_dir = tmp_path / "scores", tmp_path / "run"
    # 3 shards: the local cluster's MaxArraySize is 4
    args = [str(corpus), "--model", str(model), "-o", str(out), "--shard-mb", "1.0"]
    phi("submit", "quality-score", "--profile", "local", "--run-dir", str(run_dir), "--", *args)
    rows = wait_for(run_dir, ["quality-score"], timeout=300)
    shards = json.loads((out / "plan.json").read_text())["shards"]
    assert shards >= 2 and rows["quality-score"]["state"] == "COMPLETED", rows
    assert len(list((run_dir / "logs" / "quality-score").iterdir())) == shards  # one element per shard
    reference = tmp_path / "reference"
    phi("quality", "score", *[a if a != str(out) else str(reference) for a in args])
    got, expected = _arrays(out), _arrays(reference)
    assert list(got) == list(expected)
    for name in got:
        np.testing.assert_array_equal(got[name]["scores"], expected[name]["scores"])
        np.testing.assert_array_equal(got[name]["ids"], expected[name]["ids"])
    assert json.loads((out / "summary.json").read_text())["documents"] == len(list(corpus.rglob("*.py")))
