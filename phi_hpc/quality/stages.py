"""The two ``prepare`` stages this package provides, built lazily by ``phi_hpc.data.pipeline``.

Both are :class:`phi_hpc.data.filters.DocumentFilter` s: ``prepare`` runs them in its map stage on
every document (so they are shard-parallel), drops what they reject, counts the drops per filter in
``manifest.json`` and lists each one in the audit with the reason and score returned here.
"""

from __future__ import annotations

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


def build_quality_filter(model_path: str, threshold: float) -> DocumentFilter:
    from phi_hpc.quality.classifier import QualityModel, QualityScorer

    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--quality-threshold {threshold} is outside [0, 1]",
                         "it is a probability, e.g. --quality-threshold 0.5")
    return QualityFilter(QualityScorer(QualityModel.load(model_path)), threshold)


def build_decontamination_filter(benchmark_data: str | None, report_only: bool) -> DocumentFilter:
    from phi_hpc.quality.decontaminate import DecontaminationFilter, build_decontaminator

    return DecontaminationFilter(build_decontaminator(benchmark_data), report_only=report_only)
