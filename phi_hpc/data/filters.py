"""The contract between ``prepare`` and its optional document filters (quality, decontamination).

A filter sees a batch of documents and returns one verdict per document. ``prepare`` runs filters in
its map stage (so they are shard-parallel like tokenization), drops documents whose verdict says
``keep=False``, counts them per filter in ``manifest.json`` and lists each one in the audit file with
``reason`` and ``score``. Filters must be deterministic functions of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


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
