"""The "textbook quality" classifier: embeddings of code, then a random forest (phi-1 paper, section 2.1).

The paper embedded files with a pretrained code model (CodeGen) and trained a random forest on ~100k
GPT-4 labels. The embedders are in :mod:`phi_hpc.quality.embedders`; training (scikit-learn) is in
:mod:`phi_hpc.quality.classifier_training`. This module is what scoring needs: the fitted forest, the
model file and the scorer.

The forest is trained with scikit-learn but saved as plain arrays in an ``.npz`` (read with
``allow_pickle=False``) and evaluated with numpy. Loading a model file therefore cannot run code, and
scoring does not need scikit-learn at all (pickle/joblib files, scikit-learn's own format, execute
whatever they contain on load).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from phi_hpc.errors import UsageError
from phi_hpc.quality.embedders import EmbedderSpec, make_embedder
from phi_hpc.quality.lm_embedder import RuntimeOptions

MODEL_FORMAT = "phi-hpc-quality-forest/2"  # bump when features or the file layout change

# -- the forest as plain arrays ------------------------------------------------------------------


@dataclass
class ForestArrays:
    """All trees of a fitted forest, concatenated. Children are global node indices, -1 at leaves."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    positive: np.ndarray  # probability of the positive class at each node (used at leaves)
    roots: np.ndarray

    @classmethod
    def from_sklearn(cls, forest) -> ForestArrays:
        """A fitted classifier (0/1: leaves hold the positive share) or regressor (leaves hold means)."""
        regression = not hasattr(forest, "classes_")
        classes = [0, 1] if regression else list(forest.classes_)
        if classes != [0, 1]:
            raise UsageError(f"labels must be 0/1, got classes {classes}", "label 1 = keep, 0 = drop")
        parts = {k: [] for k in ("left", "right", "feature", "threshold", "positive")}
        roots, offset = [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            roots.append(offset)
            leaf = tree.children_left == -1
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(tree.threshold)
            values = tree.value[:, 0, :]
            parts["positive"].append(
                values[:, 0] if regression else values[:, 1] / np.maximum(values.sum(axis=1), 1e-300)
            )
            offset += tree.node_count
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(
            left=arrays["left"].astype(np.int64),
            right=arrays["right"].astype(np.int64),
            feature=arrays["feature"].astype(np.int64),
            threshold=arrays["threshold"].astype(np.float64),
            positive=arrays["positive"].astype(np.float64),
            roots=np.array(roots, dtype=np.int64),
        )

    def predict_positive(self, features: np.ndarray) -> np.ndarray:
        """Mean over trees of the leaf's positive share (scikit-learn's ``predict_proba[:, 1]``)."""
        x = np.asarray(features, dtype=np.float32)  # the forest compares float32 features, like sklearn
        rows = np.arange(len(x))
        total = np.zeros(len(x), dtype=np.float64)
        for root in self.roots.tolist():
            node = np.full(len(x), root, dtype=np.int64)
            while True:
                left = self.left[node]
                inner = left >= 0
                if not inner.any():
                    break
                go_left = x[rows, self.feature[node]] <= self.threshold[node]
                node = np.where(inner, np.where(go_left, left, self.right[node]), node)
            total += self.positive[node]
        return total / max(len(self.roots), 1)


@dataclass
class QualityModel:
    embedder: EmbedderSpec
    forest: ForestArrays
    feature_width: int
    report: dict

    def save(self, path: str | os.PathLike) -> None:
        from phi_hpc.fileio import atomic_write

        meta = {
            "format": MODEL_FORMAT,
            "embedder": asdict(self.embedder),
            "feature_width": self.feature_width,
            "report": self.report,
        }
        with atomic_write(path, "wb", encoding=None) as handle:
            np.savez_compressed(
                handle,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                **{k: getattr(self.forest, k) for k in ("left", "right", "feature", "threshold", "positive", "roots")},
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> QualityModel:
        path = Path(path)
        if not path.is_file():
            raise UsageError(
                f"quality model {path} does not exist",
                "train one with: phi-hpc quality train LABELS.jsonl -o model.npz",
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                forest = ForestArrays(
                    **{k: data[k] for k in ("left", "right", "feature", "threshold", "positive", "roots")}
                )
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"{path}: not a phi-hpc quality model ({exc})",
                "train one with: phi-hpc quality train LABELS.jsonl -o model.npz",
            ) from None
        if meta.get("format") != MODEL_FORMAT:
            raise UsageError(
                f"{path}: model format {meta.get('format')!r}, expected {MODEL_FORMAT!r}",
                "retrain it with this version of phi-hpc",
            )
        try:
            spec = EmbedderSpec(**meta["embedder"])
        except (TypeError, KeyError) as exc:
            raise UsageError(
                f"{path}: unreadable embedder settings ({exc})", "retrain it with this version of phi-hpc"
            ) from None
        return cls(spec, forest, int(meta["feature_width"]), meta.get("report", {}))


class QualityScorer:
    """A loaded model plus its embedder: ``score(texts)`` -> probability of "textbook quality"."""

    def __init__(self, model: QualityModel, runtime: RuntimeOptions | None = None):
        self.model = model
        self.embedder = make_embedder(model.embedder, runtime)
        if self.embedder.width != model.feature_width:
            raise UsageError(
                f"model expects {model.feature_width} features, embedder gives {self.embedder.width}",
                "the model was trained with a different embedder; retrain it",
            )

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self.model.forest.predict_positive(self.embedder.embed(texts))


@functools.lru_cache(maxsize=4)
def cached_scorer(model_path: str, modified_ns: int, runtime: RuntimeOptions | None = None) -> QualityScorer:
    """One loaded model (and LM embedder) per process, reloaded when the file changes (``modified_ns``)."""
    return QualityScorer(QualityModel.load(model_path), runtime)
