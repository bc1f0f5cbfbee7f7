"""The LM embedder at corpus scale, measured on the CPU with a tiny local model: embedding only (the
LM head never runs), length bucketing (same vectors, less padding), bf16, device checks, one model
per process. GPU speed is not measured here (no GPU on the test machine)."""

from __future__ import annotations

import numpy as np
import pytest

from phi_hpc.errors import UsageError
from phi_hpc.quality.lm_embedder import LMEmbedder, RuntimeOptions, cached_lm_embedder

TEXTS = [
    "x = 1\n",
    'def add(a, b):\n    """Sum."""\n    return a + b\n' * 3,
    "print('hi')\n",
    "class A:\n    pass\n" * 8,
    "import os\n",
    "def f(n):\n    return [i * i for i in range(n)]\n" * 2,
]


@pytest.fixture(scope="module")
def tiny_phi(tmp_path_factory):
    from tests.quality.test_classifier import _tiny_phi

    return _tiny_phi(tmp_path_factory.mktemp("lm") / "tiny-phi")


@pytest.mark.slow
def test_phi_embedding_never_runs_the_lm_head(tiny_phi, codegen_tokenizer):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    embedder = LMEmbedder(str(tiny_phi), str(codegen_tokenizer), max_tokens=64, runtime=RuntimeOptions(batch_size=2))
    calls = []
    embedder._model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    vectors = embedder.embed(TEXTS)
    assert calls == [] and vectors.shape == (len(TEXTS), 32)
    reference = AutoModel.from_pretrained(str(tiny_phi)).eval()  # transformers' own backbone
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    for text, vector in zip(TEXTS, vectors):
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor([tokenizer.encode(text).ids[:64]])).last_hidden_state
        np.testing.assert_allclose(vector, expected[0].mean(0).numpy(), atol=1e-4)


@pytest.mark.slow
def test_length_bucketing_gives_the_same_vectors_with_less_padding(tiny_phi, codegen_tokenizer):
    plain = LMEmbedder(
        str(tiny_phi), str(codegen_tokenizer), max_tokens=64, runtime=RuntimeOptions(batch_size=2, bucket=False)
    )
    bucketed = LMEmbedder(
        str(tiny_phi), str(codegen_tokenizer), max_tokens=64, runtime=RuntimeOptions(batch_size=2, bucket=True)
    )
    plain.padded_tokens = bucketed.padded_tokens = 0
    np.testing.assert_allclose(bucketed.embed(TEXTS), plain.embed(TEXTS), atol=1e-5)  # input order kept
    assert bucketed.padded_tokens < plain.padded_tokens


@pytest.mark.slow
def test_bf16_is_close_to_fp32_and_devices_are_checked(tiny_phi, codegen_tokenizer):
    import torch

    fp32 = LMEmbedder(str(tiny_phi), str(codegen_tokenizer), max_tokens=64).embed(TEXTS)
    bf16 = LMEmbedder(str(tiny_phi), str(codegen_tokenizer), max_tokens=64, runtime=RuntimeOptions(dtype="bf16")).embed(
        TEXTS
    )
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # it really ran in bf16
    cosine = (bf16 * fp32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99, cosine
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            LMEmbedder(str(tiny_phi), str(codegen_tokenizer), runtime=RuntimeOptions(device="cuda"))
    with pytest.raises(UsageError, match="--dtype"):
        RuntimeOptions(dtype="int4")


@pytest.mark.slow
def test_the_model_is_loaded_once_per_process(tiny_phi, codegen_tokenizer):
    from phi_hpc.quality.embedders import EmbedderSpec, make_embedder

    spec = EmbedderSpec(kind="lm", model_dir=str(tiny_phi), tokenizer=str(codegen_tokenizer), max_tokens=32)
    first, second = make_embedder(spec), make_embedder(spec)
    assert first is second
    assert cached_lm_embedder(str(tiny_phi), str(codegen_tokenizer), 32, RuntimeOptions(dtype="bf16")) is not first


@pytest.mark.slow
def test_quality_score_cli_with_the_lm_embedder(tiny_phi, codegen_tokenizer, run_cli, stdlib_dir, tmp_path):
    """`quality score --dtype bf16 --batch-size 3` with an LM model: scores match the fp32 in-process scorer."""
    import json

    from phi_hpc.quality.classifier import QualityModel, QualityScorer
    from phi_hpc.quality.classifier_training import TrainConfig, train_classifier
    from phi_hpc.quality.embedders import EmbedderSpec
    from tests.quality.corpus import labelled_set

    texts, labels = labelled_set(stdlib_dir, count=8, seed=4)
    spec = EmbedderSpec(kind="lm", model_dir=str(tiny_phi), tokenizer=str(codegen_tokenizer), max_tokens=48)
    train_classifier(texts, labels, spec, TrainConfig(trees=10, holdout=0.25)).save(tmp_path / "lm.npz")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(texts[:6]):
        (corpus / f"f{i}.py").write_text(text)
    out = tmp_path / "scores"
    run_cli(
        "quality",
        "score",
        str(corpus),
        "--model",
        str(tmp_path / "lm.npz"),
        "-o",
        str(out),
        "--batch-size",
        "3",
        "--dtype",
        "fp32",
        check=True,
    )
    from phi_hpc.quality.scoring import load_scores

    table = load_scores(out)
    expected = QualityScorer(QualityModel.load(tmp_path / "lm.npz")).score(
        [(corpus / name.rsplit("/", 1)[-1]).read_text() for name in table.ids.tolist()]
    )
    np.testing.assert_allclose(table.scores, expected, atol=1e-6)
    assert json.loads((out / "summary.json").read_text())["runtime"]["batch_size"] == 3
