"""The contract between ``prepare`` and its optional document filters (quality, decontamination).

A filter sees a batch of documents and returns one verdict per document. ``prepare`` runs filters in
its map stage (so they are shard-parallel like tokenization), drops documents whose verdict says
``keep=False``, counts them per filter in ``manifest.json`` and lists each one in the audit file with
``reason`` and ``score``. Filters must be deterministic functions of the text.

Filters plug in from outside: ``prepare`` knows none of them. Its caller hands the pipeline a
:class:`FilterSource`, which turns the config's filter options into filters (the CLI passes
:class:`phi_hpc.quality.stages.PrepareFilters`; a test can pass its own). So this package never
imports the packages that implement filters, and without a source a config that asks for filters
is an error, never a silently unfiltered run.

What ``prepare`` keeps of a verdict is a :class:`FilterNote`. :meth:`FilterNote.of` is the one place
that tells a drop from a flag from a score, and :func:`audit_order` the one place that says which
notes the audit lists, in which order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from phi_hpc.errors import PhiError, UsageError


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str = ""  # why it was dropped (e.g. "13-gram overlap with HumanEval/12"); empty when kept
    score: float | None = None  # a filter's score (quality probability, overlap fraction), for the audit


class DocumentFilter(Protocol):
    name: str  # short and stable: it keys the manifest counts ("quality", "decontamination")

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        """One verdict per text, in order."""
        ...


def filters_requested(config) -> bool:
    """Whether a prepare config (:class:`phi_hpc.data.config.PrepareConfig`) asks for any filter."""
    return bool(config.quality_model or config.quality_scores or config.decontaminate)


class FilterSource(Protocol):
    """Where ``prepare`` gets its filters. It is part of the planned run, so forked map workers
    inherit it; :meth:`build` is called once per shard, so a source that is expensive to build
    (a model, a benchmark index) keeps what it built for the life of the process."""

    def content_hashes(self, config) -> dict:
        """What the requested filters read, by content: part of the run's fingerprint, so a
        retrained model or an updated benchmark file invalidates a run even at the same path."""
        ...

    def build(self, config) -> list[DocumentFilter]:
        """The filters the config asks for, in the order they run."""
        ...


class NoFilters:
    """The source when nothing was plugged in: fine for a config without filter options."""

    def content_hashes(self, config) -> dict:
        self._refuse(config)
        return {}

    def build(self, config) -> list[DocumentFilter]:
        self._refuse(config)
        return []

    @staticmethod
    def _refuse(config) -> None:
        if filters_requested(config):
            raise UsageError(
                "quality/decontamination filters were asked for, but this prepare run has none plugged in",
                "run them through the phi-hpc prepare command, which provides them",
            )


FILTERED, FLAGGED, SCORED = "filtered", "flagged", "scored"


@dataclass(frozen=True)
class FilterNote:
    """One verdict worth recording: a drop, a flag (kept, with a reason: report-only
    decontamination) or a score (kept: the quality probability, to tune the threshold later)."""

    document: int  # in the map stage, within the shard; after reduce's load, within the corpus
    filter: str
    kind: str  # FILTERED, FLAGGED or SCORED
    reason: str = ""
    score: float | None = None

    @classmethod
    def of(cls, document: int, filter_name: str, verdict: Verdict) -> FilterNote | None:
        if not verdict.keep:
            kind = FILTERED
        elif verdict.reason:
            kind = FLAGGED
        elif verdict.score is not None:
            kind = SCORED
        else:
            return None  # kept with nothing to say
        return cls(document, filter_name, kind, verdict.reason, verdict.score)

    def to_dict(self) -> dict:
        return asdict(self)

    def audit_entry(self, origin: str) -> dict:
        """This note as a line of ``audit.jsonl`` (``origin``: the document's ``file:line``)."""
        if self.kind == FILTERED:
            return {
                "document": origin,
                "removed": "filtered",
                "filter": self.filter,
                "reason": self.reason,
                "score": self.score,
            }
        if self.kind == FLAGGED:
            return {
                "document": origin,
                "removed": None,
                "flagged_by": self.filter,
                "reason": self.reason,
                "score": self.score,
            }
        return {"document": origin, "removed": None, "scored_by": self.filter, "score": self.score}


_AUDIT_RANK = {FLAGGED: 0, SCORED: 1, FILTERED: 2}


def audit_order(notes: Iterable[FilterNote], kept: bool) -> list[FilterNote]:
    """The notes of one document that the audit lists: flags, then scores (only for a document
    that made it into the output: a duplicate's score is noise), then the drop; each in filter order."""
    return sorted((n for n in notes if kept or n.kind != SCORED), key=lambda n: _AUDIT_RANK[n.kind])


def count_by_filter(notes: Iterable[FilterNote], kind: str) -> dict[str, int]:
    """The manifest's count of one kind of note, per filter name."""
    counts: dict[str, int] = {}
    for note in notes:
        if note.kind == kind:
            counts[note.filter] = counts.get(note.filter, 0) + 1
    return dict(sorted(counts.items()))


def apply_filters(
    filters: Sequence[DocumentFilter], texts: list[str], first: int
) -> tuple[list[bool], list[FilterNote]]:
    """Run each filter on the documents the filters before it kept; returns which documents survive
    all of them, and the notes (``first``: the shard index of ``texts[0]``)."""
    keep = [True] * len(texts)
    notes: list[FilterNote] = []
    for document_filter in filters:
        alive = [i for i in range(len(texts)) if keep[i]]
        if not alive:
            break
        verdicts = document_filter.evaluate([texts[i] for i in alive])
        if len(verdicts) != len(alive):
            raise PhiError(
                f"filter {document_filter.name!r} returned {len(verdicts)} verdicts for {len(alive)} documents"
            )
        for i, verdict in zip(alive, verdicts):
            keep[i] = verdict.keep
            note = FilterNote.of(first + i, document_filter.name, verdict)
            if note is not None:
                notes.append(note)
    return keep, notes
