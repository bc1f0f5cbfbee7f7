"""Stop sequences, the usual post-processing of a base model's completion.

Kept free of torch: the scorer (``phi_hpc.eval``) cuts completions it is given with the same rule
that the decoder (``phi_hpc.model.generate``) applies to what it generates.
"""

from __future__ import annotations

from collections.abc import Sequence


def truncate_at_stop(text: str, stop_sequences: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop sequence."""
    cut = len(text)
    for stop in stop_sequences:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]
