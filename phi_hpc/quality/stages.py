"""The two ``prepare`` stages this package provides, built lazily by ``phi_hpc.data.pipeline``.

Both are :class:`phi_hpc.data.filters.DocumentFilter` s: ``prepare`` runs them in its map stage on
every document (so they are shard-parallel), drops what they reject, counts the drops per filter in
``manifest.json`` and lists each one in the audit with the reason and score returned here.

``prepare`` asks for the filters once per shard; a worker process handles many shards, so what is
expensive to set up (the benchmark index, the model) is built once per process and reused. The
decontamination index is also cached on disk (``$PHI_HPC_CACHE_DIR``, default ``~/.cache/phi-hpc``),
keyed by the benchmark files' content and the settings, so each worker only loads it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Sequence

from phi_hpc.data.filters import DocumentFilter, Verdict
from phi_hpc.errors import UsageError


@dataclass
class QualityFilter:
    """Keeps documents whose classifier probability of "textbook quality" is at least ``threshold``."""

    scorer: object  # phi_hpc.quality.classifier.QualityScorer
    threshold: float
    name: str = "quality"

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        scores = self.scorer.score(list(texts)).tolist()
        return [Verdict(keep=True, score=s) if s >= self.threshold else
                Verdict(keep=False, reason=f"quality score {s:.3f} < threshold {self.threshold}", score=s)
                for s in scores]


@functools.lru_cache(maxsize=4)
def _scorer(model_path: str, modified_ns: int):
    from phi_hpc.quality.classifier import QualityModel, QualityScorer

    return QualityScorer(QualityModel.load(model_path))


@functools.lru_cache(maxsize=4)
def _decontaminator(benchmark_data: str | None):
    from phi_hpc.quality.decontaminate import build_decontaminator, default_cache_dir

    return build_decontaminator(benchmark_data, cache_dir=default_cache_dir())


def build_quality_filter(model_path: str, threshold: float) -> DocumentFilter:
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--quality-threshold {threshold} is outside [0, 1]",
                         "it is a probability, e.g. --quality-threshold 0.5")
    try:
        modified = os.stat(model_path).st_mtime_ns
    except OSError:
        modified = -1  # QualityModel.load reports the missing file
    return QualityFilter(_scorer(str(model_path), modified), threshold)


def build_decontamination_filter(benchmark_data: str | None, report_only: bool) -> DocumentFilter:
    from phi_hpc.quality.decontaminate import DecontaminationFilter

    return DecontaminationFilter(_decontaminator(str(benchmark_data) if benchmark_data else None),
                                 report_only=report_only)
