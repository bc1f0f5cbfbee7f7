"""The "textbook quality" classifier: embeddings of code, then a random forest (phi-1 paper, section 2.1).

The paper embedded files with a pretrained code model (CodeGen) and trained a random forest on ~100k
GPT-4 labels. Two embedders are offered:

* ``hashed`` -- bag of code tokens hashed into a fixed number of buckets (log counts, L2-normalised)
  plus a few style statistics (comment and docstring share, identifier length, ...). Runs anywhere,
  fast enough to score every document of a pretraining corpus on login-node CPUs.
* ``lm`` -- mean-pooled final hidden states of a causal LM: our own checkpoint or any local HF folder.

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

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import iter_jsonl

MODEL_FORMAT = "phi-hpc-quality-forest/2"  # bump when features or the file layout change


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything needed to rebuild the embedder a model was trained with (stored inside the model)."""

    kind: str = "hashed"  # "hashed" | "lm"
    dim: int = 2048  # hashed: number of buckets
    # One window for labeller and embedders: `quality label` shows the LLM the first 6000 characters
    # (--max-chars), so the features see the same beginning (6000 bytes; ~1536 code tokens for an LM).
    max_bytes: int = 6000  # hashed
    model_dir: str | None = None  # lm: checkpoint or HF folder
    tokenizer: str | None = None  # lm: tokenizer.json when the folder has none
    max_tokens: int = 1536  # lm
    batch_size: int = 8  # lm


class HashedTokenEmbedder:
    """Hashed bag of code tokens + style statistics, all computed with numpy from the token arrays of
    :mod:`phi_hpc.quality.tokens` (shared with decontamination). Deterministic across processes."""

    STATISTICS = (
        "comment_marks_per_line",
        "triple_quotes_per_line",
        "mean_name_length",
        "short_name_share",
        "blank_line_share",
        "mean_line_length",
    )

    def __init__(self, dim: int = 2048, max_bytes: int = 6000, with_statistics: bool = True):
        self.dim = dim
        self.max_bytes = max_bytes
        self.with_statistics = with_statistics

    @property
    def width(self) -> int:
        return self.dim + (len(self.STATISTICS) if self.with_statistics else 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from phi_hpc.quality.tokens import SHARED_CACHE

        out = np.zeros((len(texts), self.width), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = SHARED_CACHE.get(text)
            keep = int(np.searchsorted(tokens.starts, self.max_bytes))  # the file's beginning (bytes)
            counts = np.bincount((tokens.hashes[:keep] % np.uint64(self.dim)).astype(np.int64), minlength=self.dim)
            weights = np.log1p(counts.astype(np.float32))
            # A plain sum of squares, not np.linalg.norm: no BLAS call, so no BLAS thread pool wakes up
            # inside prepare's worker processes.
            out[row, : self.dim] = weights / max(float(np.sqrt((weights * weights).sum())), 1e-12)
            if self.with_statistics:
                out[row, self.dim :] = self._statistics(tokens, keep)
        return out

    @staticmethod
    def _statistics(tokens, keep: int) -> list[float]:
        data = tokens.data[: int(tokens.ends[keep - 1]) if keep else 0]
        lines = data.count(b"\n") + 1
        starts, ends = tokens.starts[:keep], tokens.ends[:keep]
        first = np.frombuffer(data, dtype=np.uint8)[starts] if keep else np.zeros(0, dtype=np.uint8)
        names = (first >= ord("a")) & (first <= ord("z")) | (first == ord("_"))
        lengths = (ends - starts)[names]
        n_names = max(len(lengths), 1)
        return [
            data.count(b"#") / lines,
            (data.count(b'"""') + data.count(b"'''")) / lines,
            float(lengths.sum()) / n_names / 10.0,
            float((lengths <= 2).sum()) / n_names,
            data.count(b"\n\n") / lines,
            len(data) / lines / 100.0,
        ]


from phi_hpc.quality.lm_embedder import RuntimeOptions, cached_lm_embedder  # noqa: E402  (re-export)


def make_embedder(spec: EmbedderSpec, runtime: RuntimeOptions | None = None):
    """The embedder of ``spec``; an LM is loaded once per process (prepare workers, score shards and
    decontamination share it), on ``runtime``'s device and dtype."""
    if spec.kind == "hashed":
        return HashedTokenEmbedder(dim=spec.dim, max_bytes=spec.max_bytes)
    if spec.kind == "lm":
        if not spec.model_dir:
            raise UsageError("--embedder lm needs --model-dir", "pass a checkpoint or a local HF folder")
        return cached_lm_embedder(
            spec.model_dir, spec.tokenizer, spec.max_tokens, runtime or RuntimeOptions(batch_size=spec.batch_size)
        )
    raise UsageError(f"unknown embedder {spec.kind!r}", "use --embedder hashed or --embedder lm")


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


# -- training ------------------------------------------------------------------------------------


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
