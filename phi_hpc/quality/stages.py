"""The ``prepare`` filters this package provides, plugged in through :class:`PrepareFilters`.

All are :class:`phi_hpc.data.filters.DocumentFilter` s: ``prepare`` runs them in its map stage on
every document (so they are shard-parallel), drops what they reject, counts the drops per filter in
``manifest.json`` and lists each one in the audit with the reason and score returned here.
:class:`PrepareFilters` is the :class:`phi_hpc.data.filters.FilterSource` the ``prepare`` command
hands the pipeline: it turns the config's options (``--quality-model``, ``--quality-scores``,
``--decontaminate``) into these filters; the pipeline itself never imports this package.

``prepare`` asks for the filters once per shard; a worker process handles many shards, so what is
expensive to set up (the benchmark index, the model) is built once per process and reused. The
decontamination index is also cached on disk (``$PHI_HPC_CACHE_DIR``, default ``~/.cache/phi-hpc``),
keyed by the benchmark files' content and the settings, so each worker only loads it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

from phi_hpc.data.filters import DocumentFilter, Verdict
from phi_hpc.errors import UsageError


@dataclass
class QualityFilter:
    """Keeps documents whose classifier probability of "textbook quality" is at least ``threshold``."""

    scorer: object  # phi_hpc.quality.classifier.QualityScorer
    threshold: float
    name: str = "quality"

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        return [_verdict(s, self.threshold) for s in self.scorer.score(list(texts)).tolist()]


def _verdict(score: float, threshold: float) -> Verdict:
    """The one place a quality score becomes a keep/drop (inline scoring and stored scores alike)."""
    if score >= threshold:
        return Verdict(keep=True, score=score)
    return Verdict(keep=False, reason=f"quality score {score:.3f} < threshold {threshold}", score=score)


@dataclass
class StoredScoreFilter:
    """The same verdicts as :class:`QualityFilter`, from scores ``quality score`` wrote: no embedding.

    Documents are looked up by their text's digest; one that was never scored is an error, not a
    silent keep or drop."""

    lookup: object  # phi_hpc.quality.scoring.ScoreLookup
    threshold: float
    folder: str
    name: str = "quality"

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        import hashlib

        verdicts = []
        for text in texts:
            score = self.lookup.get(hashlib.sha256(text.encode("utf-8")).digest()[:16])
            if score is None:
                raise UsageError(
                    f"a document ({text[:40]!r}...) has no score in {self.folder}",
                    "score the same inputs: phi-hpc quality score INPUT... -o " + self.folder,
                )
            verdicts.append(_verdict(score, self.threshold))
        return verdicts


@functools.lru_cache(maxsize=2)
def _lookup(folder: str, plan_modified_ns: int):
    from phi_hpc.quality.scoring import ScoreLookup, load_scores

    return ScoreLookup(load_scores(folder))


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 10.0:
        raise UsageError(
            f"--quality-threshold {threshold} is outside [0, 10]",
            "a probability (e.g. 0.5), or a 0-10 grade for a regression model",
        )


def build_score_filter(folder: str, threshold: float) -> DocumentFilter:
    _check_threshold(threshold)
    try:
        modified = os.stat(os.path.join(folder, "plan.json")).st_mtime_ns
    except OSError:
        modified = -1  # load_scores reports the missing folder
    return StoredScoreFilter(_lookup(str(folder), modified), threshold, str(folder))


class PrepareFilters:
    """The filters a prepare config asks for (a :class:`phi_hpc.data.filters.FilterSource`).

    It holds nothing: what is expensive to build is cached per process by the functions it calls."""

    def content_hashes(self, config) -> dict:
        _check_options(config)
        return content_hashes(config)

    def build(self, config) -> list[DocumentFilter]:
        _check_options(config)
        try:
            return _build_filters(config)
        except ModuleNotFoundError as exc:
            raise UsageError(
                "quality/decontamination filters are not available in this installation", f"missing module {exc.name}"
            ) from None


def _check_options(config) -> None:
    if config.quality_model and config.quality_scores:
        raise UsageError("--quality-model and --quality-scores both given", "use one: stored scores or inline scoring")


def _build_filters(config) -> list[DocumentFilter]:
    """In the order they run: quality (a model or stored scores), then decontamination."""
    filters = []
    if config.quality_model:
        filters.append(build_quality_filter(config.quality_model, config.quality_threshold))
    if config.quality_scores:
        filters.append(build_score_filter(config.quality_scores, config.quality_threshold))
    if config.decontaminate:
        filters.append(
            build_decontamination_filter(
                config.benchmark_data, config.decontaminate_report_only, config.decontamination
            )
        )
    return filters


def content_hashes(config) -> dict:
    """What the filters read, by content (for prepare's run fingerprint): a retrained model, new
    scores or an updated benchmark file invalidate a run even at the same path."""
    from phi_hpc.fileio import sha256_file

    hashes: dict = {}
    if config.quality_model and os.path.isfile(config.quality_model):
        hashes["quality_model_sha256"] = sha256_file(config.quality_model)
    if config.quality_scores:
        plan = os.path.join(config.quality_scores, "plan.json")
        if os.path.isfile(plan):
            hashes["quality_scores_plan_sha256"] = sha256_file(plan)
    if config.decontaminate:
        from phi_hpc.quality.benchmarks import load_benchmarks

        try:
            hashes["benchmarks_sha256"] = {
                os.path.basename(p): sha256_file(p) for p in load_benchmarks(config.benchmark_data).files
            }
        except UsageError:
            pass  # the filter itself reports missing benchmark data
    return hashes


@functools.lru_cache(maxsize=4)
def _decontaminator(benchmark_data: str | None, settings=None):
    from phi_hpc.quality.benchmarks import load_benchmarks
    from phi_hpc.quality.decontaminate import Decontaminator, default_cache_dir
    from phi_hpc.quality.decontamination_config import DecontaminationConfig

    return Decontaminator(load_benchmarks(benchmark_data), settings or DecontaminationConfig(), default_cache_dir())


def build_quality_filter(model_path: str, threshold: float) -> DocumentFilter:
    try:
        modified = os.stat(model_path).st_mtime_ns
    except OSError:
        modified = -1  # QualityModel.load reports the missing file
    from phi_hpc.quality.classifier import cached_scorer

    scorer = cached_scorer(str(model_path), modified)
    if scorer.model.report.get("target") == "score":
        _check_threshold(threshold)
    elif not 0.0 <= threshold <= 1.0:
        raise UsageError(
            f"--quality-threshold {threshold} is outside [0, 1]",
            "this model gives probabilities, e.g. --quality-threshold 0.5",
        )
    return QualityFilter(scorer, threshold)


def build_decontamination_filter(benchmark_data: str | None, report_only: bool, settings=None) -> DocumentFilter:
    """``settings``: a :class:`DecontaminationConfig` (prepare's ``decontamination`` section)."""
    from phi_hpc.quality.decontaminate import DecontaminationFilter

    return DecontaminationFilter(
        _decontaminator(str(benchmark_data) if benchmark_data else None, settings), report_only=report_only
    )
