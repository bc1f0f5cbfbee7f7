"""The features the quality classifier sees: which embedder, and the hashed one itself.

Training (:mod:`phi_hpc.quality.classifier_training`), scoring (:mod:`phi_hpc.quality.classifier`) and
decontamination's embedding check all turn text into vectors the same way; the choice lives here, in
:class:`EmbedderSpec` (stored inside each model file, so a model is always scored with the features it
was trained on) and :func:`make_embedder`. Two embedders are offered:

* ``hashed`` -- bag of code tokens hashed into a fixed number of buckets (log counts, L2-normalised)
  plus a few style statistics (comment and docstring share, identifier length, ...). Runs anywhere,
  fast enough to score every document of a pretraining corpus on login-node CPUs.
* ``lm`` -- mean-pooled final hidden states of a causal LM (:mod:`phi_hpc.quality.lm_embedder`): our own
  checkpoint or any local HF folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phi_hpc.errors import UsageError
from phi_hpc.quality.lm_embedder import RuntimeOptions, cached_lm_embedder


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
