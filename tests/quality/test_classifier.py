"""Acceptance 2: the quality classifier separates documented code from stripped, obfuscated code."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from phi_hpc.errors import UsageError
from phi_hpc.quality.classifier import ForestArrays, QualityModel, QualityScorer
from phi_hpc.quality.classifier_training import TrainConfig, load_labels, train_classifier
from phi_hpc.quality.embedders import EmbedderSpec, HashedTokenEmbedder
from phi_hpc.quality.lm_embedder import LMEmbedder
from phi_hpc.quality.stages import build_quality_filter
from tests.quality.corpus import labelled_set


@pytest.fixture(scope="module")
def labelled(stdlib_dir):
    texts, labels = labelled_set(stdlib_dir, count=150)
    assert len(texts) == 300
    return texts, labels


@pytest.fixture(scope="module")
def hashed_model(labelled):
    texts, labels = labelled
    return train_classifier(texts, labels, EmbedderSpec(kind="hashed", dim=1024), TrainConfig(trees=60, seed=1))


def test_hashed_embedder_separates_documented_from_obfuscated_code(hashed_model):
    heldout = hashed_model.report["heldout"]
    assert heldout["n"] == 60
    assert heldout["accuracy"] >= 0.9, heldout
    assert heldout["auc"] >= 0.9 and heldout["f1"] >= 0.9, heldout


def test_separation_is_not_a_formatting_artifact(stdlib_dir):
    """Both sides re-rendered by ast.unparse (same quotes, spacing, no comments): only docstrings and
    names tell them apart, and that is still enough."""
    import ast

    from tests.quality.corpus import documented_stdlib_files, obfuscate

    texts, labels = [], []
    for source in documented_stdlib_files(stdlib_dir, count=100, seed=2):
        texts += [ast.unparse(ast.parse(source)), obfuscate(source)]
        labels += [1, 0]
    model = train_classifier(texts, labels, EmbedderSpec(kind="hashed", dim=1024), TrainConfig(trees=40, seed=2))
    assert model.report["heldout"]["accuracy"] >= 0.9, model.report["heldout"]


def test_numpy_forest_matches_scikit_learn(labelled):
    from sklearn.ensemble import RandomForestClassifier

    texts, labels = labelled
    x, y = HashedTokenEmbedder(dim=256).embed(texts), np.array(labels)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:200], order[200:]
    forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(x[train], y[train])
    ours = ForestArrays.from_sklearn(forest).predict_positive(x[test])
    np.testing.assert_allclose(ours, forest.predict_proba(x[test])[:, 1], atol=1e-12)


def test_saved_model_is_plain_arrays_and_scores_the_same(hashed_model, labelled, tmp_path):
    path = tmp_path / "quality.npz"
    hashed_model.save(path)
    with zipfile.ZipFile(path) as archive:  # .npy arrays and nothing else: no pickle stream to execute
        assert all(name.endswith(".npy") for name in archive.namelist())
    with np.load(path, allow_pickle=False) as data:
        assert data["meta"].dtype == np.uint8 and data["left"].dtype == np.int64
    loaded = QualityModel.load(path)
    assert loaded.report == json.loads(json.dumps(hashed_model.report))
    texts = labelled[0][:20]
    embedder = HashedTokenEmbedder(dim=1024)
    np.testing.assert_allclose(
        QualityScorer(loaded).score(texts), hashed_model.forest.predict_positive(embedder.embed(texts))
    )


def test_quality_filter_keeps_documented_code(hashed_model, labelled, tmp_path):
    path = tmp_path / "quality.npz"
    hashed_model.save(path)
    quality = build_quality_filter(str(path), 0.5)
    assert quality.name == "quality"
    texts, labels = labelled
    verdicts = quality.evaluate(texts[:40])
    agree = sum(v.keep == bool(label) for v, label in zip(verdicts, labels[:40]))
    assert agree >= 36
    dropped = [v for v in verdicts if not v.keep]
    assert dropped and all("quality score" in v.reason and v.score < 0.5 for v in dropped)
    with pytest.raises(UsageError, match="outside"):
        build_quality_filter(str(path), 1.5)


def test_bad_model_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        QualityModel.load(tmp_path / "missing.npz")
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a phi-hpc quality model"):
        QualityModel.load(bogus)
    older = tmp_path / "older.npz"  # a model written by another version of the format
    meta = {"format": "phi-hpc-quality-forest/1", "embedder": {"kind": "hashed", "max_chars": 10}, "feature_width": 3}
    np.savez(
        older,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        **{k: np.zeros(1) for k in ("left", "right", "feature", "threshold", "positive", "roots")},
    )
    with pytest.raises(UsageError, match="model format 'phi-hpc-quality-forest/1'") as error:
        QualityModel.load(older)
    assert "retrain" in error.value.hint
    meta["format"] = "phi-hpc-quality-forest/2"  # right format, settings this version does not know
    np.savez(
        older,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        **{k: np.zeros(1) for k in ("left", "right", "feature", "threshold", "positive", "roots")},
    )
    with pytest.raises(UsageError, match="unreadable embedder settings"):
        QualityModel.load(older)


def test_labels_file_errors_name_the_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 7}\n')
    with pytest.raises(UsageError, match=r"labels.jsonl:2"):
        load_labels(path)
    path.write_text('{"text": "a", "score": 8}\n{"text": "b", "score": 2}\n{"text": "c", "label": null}\n')
    assert load_labels(path, score_threshold=5) == (["a", "b", "c"][:2], [1, 0])


def _tiny_phi(folder):
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=51200,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=256,
    )
    PhiForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_lm_embedder_with_a_tiny_local_hf_model(tmp_path, codegen_tokenizer, labelled):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    folder = _tiny_phi(tmp_path / "tiny-phi")
    embedder = LMEmbedder(str(folder), tokenizer=str(codegen_tokenizer), max_tokens=64, batch_size=4)
    texts = ["def add(a, b):\n    return a + b\n", "x = 1", labelled[0][0]]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 32) and np.isfinite(vectors).all()

    # Same numbers as transformers' own model, mean-pooled over each text's tokens.
    reference = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    for text, vector in zip(texts, vectors):
        ids = torch.tensor([tokenizer.encode(text).ids[:64]])
        with torch.no_grad():
            expected = reference(input_ids=ids).last_hidden_state[0].mean(0).numpy()
        np.testing.assert_allclose(vector, expected, atol=1e-4)

    texts, labels = labelled[0][:24], labelled[1][:24]
    spec = EmbedderSpec(kind="lm", model_dir=str(folder), tokenizer=str(codegen_tokenizer), max_tokens=64)
    model = train_classifier(texts, labels, spec, TrainConfig(trees=10, holdout=0.25))
    assert model.feature_width == 32 and model.report["heldout"]["n"] == 6
    model.save(tmp_path / "lm.npz")
    scores = QualityScorer(QualityModel.load(tmp_path / "lm.npz")).score(texts[:4])
    assert scores.shape == (4,) and ((0 <= scores) & (scores <= 1)).all()

    # A training run's folder works too: checkpoints/latest names the step, whose hf/ holds the model.
    step = tmp_path / "run" / "checkpoints" / "00010"
    step.mkdir(parents=True)
    folder.rename(step / "hf")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("00010\n")
    from_run = LMEmbedder(str(tmp_path / "run"), tokenizer=str(codegen_tokenizer), max_tokens=64, batch_size=4)
    np.testing.assert_allclose(
        from_run.embed(texts[:2]),
        LMEmbedder(str(step / "hf"), str(codegen_tokenizer), max_tokens=64).embed(texts[:2]),
        atol=1e-6,
    )


@pytest.mark.slow
def test_lm_embedder_falls_back_to_automodel_for_other_architectures(tmp_path, codegen_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=51200, n_embd=16, n_layer=1, n_head=2, n_positions=128)).save_pretrained(
        folder
    )
    vectors = LMEmbedder(str(folder), tokenizer=str(codegen_tokenizer), max_tokens=32).embed(["a = 1", "print(a)"])
    assert vectors.shape == (2, 16)
    assert not np.allclose(vectors[0], vectors[1])
