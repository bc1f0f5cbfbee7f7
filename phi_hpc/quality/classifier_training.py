"""Training the quality classifier: labels files in, a fitted forest and its held-out report out.

Only ``quality train`` and the benchmarks train, so scikit-learn (and scipy for the Spearman report)
is imported here and nowhere on the scoring path (:mod:`phi_hpc.quality.classifier`). The labels files
are read here too: ``quality label`` writes them, and training is their only reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import iter_jsonl
from phi_hpc.quality.classifier import ForestArrays, QualityModel
from phi_hpc.quality.embedders import EmbedderSpec, make_embedder


@dataclass(frozen=True)
class TrainConfig:
    trees: int = 200
    max_depth: int | None = None
    min_samples_leaf: int = 1
    holdout: float = 0.2
    seed: int = 0
    # "binary": a classifier on 0/1 labels, scores are probabilities. "score": a regression forest on the
    # labeller's 0-10 grades, scores are predicted grades (benchmarks/quality_eval.py compares them).
    target: str = "binary"

    def __post_init__(self) -> None:
        if self.target not in ("binary", "score"):
            raise UsageError(f"--target {self.target!r}: use binary or score")


def _binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = (scores >= threshold).astype(int)
    metrics = {
        "n": int(len(labels)),
        "positives": int(labels.sum()),
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
    }
    metrics["auc"] = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None
    return metrics


def _score_metrics(grades: np.ndarray, predicted: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    return {
        "n": int(len(grades)),
        "spearman": float(spearmanr(grades, predicted).statistic) if len(grades) > 1 else None,
        "mae": float(np.abs(grades - predicted).mean()) if len(grades) else None,
    }


def fit_forest(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig()) -> ForestArrays:
    """The forest of ``config.target`` fitted on features ``x``, as plain arrays."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    kind = RandomForestRegressor if config.target == "score" else RandomForestClassifier
    forest = kind(
        n_estimators=config.trees,
        max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf,
        random_state=config.seed,
        n_jobs=1,
    )
    forest.fit(x, y)
    return ForestArrays.from_sklearn(forest)


def _split(y: np.ndarray, config: TrainConfig, groups: Sequence[str] | None):
    """Held-out indices: whole groups (repositories, folders) when given, so near-copies of a training
    file are not scored as unseen; else a stratified random share."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    index = np.arange(len(y))
    if groups is not None and len(set(groups)) >= 2:
        return next(
            GroupShuffleSplit(n_splits=1, test_size=config.holdout, random_state=config.seed).split(
                index, groups=list(groups)
            )
        )
    stratify = y if config.target == "binary" else None
    return train_test_split(index, test_size=config.holdout, random_state=config.seed, stratify=stratify)


def train_classifier(
    texts: Sequence[str],
    labels: Sequence,
    spec: EmbedderSpec,
    config: TrainConfig = TrainConfig(),
    embedder=None,
    groups: Sequence[str] | None = None,
) -> QualityModel:
    """Embed, hold out ``holdout`` (whole ``groups`` when given), fit the forest, report held-out metrics."""
    if config.target == "binary":
        y = np.asarray(labels, dtype=int)
        if len(set(y.tolist())) != 2:
            raise UsageError(f"need both labels 0 and 1, got {sorted(set(y.tolist()))}", "label more examples")
        if min(np.bincount(y)) < 2:
            raise UsageError("each label needs at least 2 examples for a held-out split", "label more examples")
    else:
        y = np.asarray(labels, dtype=np.float64)
        if len(y) < 4 or len(set(y.tolist())) < 2:
            raise UsageError("need at least 4 graded examples with different grades", "label more examples")
    embedder = embedder or make_embedder(spec)
    x = embedder.embed(list(texts))
    idx_train, idx_test = _split(y, config, groups)
    arrays = fit_forest(x[idx_train], y[idx_train], config)
    measure = _binary_metrics if config.target == "binary" else _score_metrics
    report = {
        "train": measure(y[idx_train], arrays.predict_positive(x[idx_train])),
        "heldout": measure(y[idx_test], arrays.predict_positive(x[idx_test])),
        "grouped": groups is not None,
        "target": config.target,
        "config": asdict(config),
    }
    return QualityModel(spec, arrays, int(x.shape[1]), report)


def load_labels(path: str | os.PathLike, score_threshold: float | None = None) -> tuple[list[str], list[int]]:
    """Read a labels jsonl: ``text`` plus ``label`` (0/1), or ``score`` cut at ``score_threshold``.

    Lines written by ``quality label`` carry both; lines whose label could not be parsed (``label``
    null) are skipped.
    """
    texts, labels = [], []
    path = Path(path)
    for line_no, record in _label_records(path, '"label": 0|1'):
        if score_threshold is not None and record.get("score") is not None:
            label = int(float(record["score"]) >= score_threshold)
        else:
            label = record.get("label")
            if label is None:
                continue
            if label not in (0, 1, True, False):
                raise UsageError(
                    f"{path}:{line_no}: label {label!r} is not 0/1", "use 0/1, or pass --score-threshold to cut scores"
                )
            label = int(label)
        texts.append(record["text"])
        labels.append(label)
    if not texts:
        raise PhiError(f"{path}: no labelled lines", "label some files first (phi-hpc quality label)")
    return texts, labels


def _label_records(path: Path, needs: str):
    """``(line number, record)`` of a labels jsonl; a record without a ``text`` string is an error naming
    the line and what each line ``needs`` besides the text."""
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist", "create it with: phi-hpc quality label ...")
    for line_no, record in iter_jsonl(path, "fix or delete that line"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f"{path}:{line_no}: no 'text' string", f'each line needs {{"text": ..., {needs}}}')
        yield line_no, record


def load_grades(path: str | os.PathLike) -> tuple[list[str], list[float], list[str]]:
    """Texts, 0-10 ``score`` s and groups (each line's ``origin`` folder) of a labels jsonl, for
    ``--target score``; lines without a score (unparsed answers) are skipped."""
    texts, grades, groups = [], [], []
    path = Path(path)
    for line_no, record in _label_records(path, '"score": 0-10'):
        if record.get("score") is None:
            continue
        try:
            grades.append(float(record["score"]))
        except (TypeError, ValueError):
            raise UsageError(f"{path}:{line_no}: score {record['score']!r} is not a number") from None
        texts.append(record["text"])
        groups.append(origin_group(str(record.get("origin") or f"line-{line_no}")))
    if not texts:
        raise PhiError(f"{path}: no graded lines", "label some files first (phi-hpc quality label)")
    return texts, grades, groups


def origin_group(origin: str) -> str:
    """The folder of a document's origin (``repo/pkg/mod.py:12`` -> ``repo/pkg``): the unit held out
    together, so a package's files never sit on both sides of the split."""
    path = origin.rsplit(":", 1)[0] if origin.rsplit(":", 1)[-1].isdigit() else origin
    return os.path.dirname(path) or path
