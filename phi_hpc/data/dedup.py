"""Exact and near-duplicate detection over a whole corpus' signatures (the reduce stage).

Survivor rule: in every cluster of duplicates the document that comes *first in input order*
survives. Input order is fixed by the shard plan (sorted directories, command-line order), so the
choice is deterministic and independent of worker count or timing, and it is easy to explain: the
copy you listed first is the one you keep.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import numpy as np

_U64 = np.uint64


@functools.lru_cache(maxsize=16)
def lsh_parameters(threshold: float, num_perm: int, false_positive_weight: float = 0.5) -> tuple[int, int]:
    """Bands x rows minimizing the weighted area of false positives below and false negatives above
    ``threshold`` under the LSH S-curve ``1 - (1 - s**rows)**bands`` (the usual way to pick them).

    Used by the synthetic-data diversity index, where each candidate is a Python-level check; prepare's
    vectorized verification affords :func:`recall_first_bands` instead."""
    grid_low = np.linspace(0.0, threshold, 200)
    grid_high = np.linspace(threshold, 1.0, 200)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        if rows < 1:
            break
        fp = np.trapezoid(1 - (1 - grid_low**rows) ** bands, grid_low)
        fn = np.trapezoid((1 - grid_high**rows) ** bands, grid_high)
        cost = false_positive_weight * fp + (1 - false_positive_weight) * fn
        if cost < best_cost - 1e-12:
            best, best_cost = (bands, rows), cost
    return best


# A pair exactly at the threshold may fail to become a candidate at most this often under the default
# banding. Every candidate is verified against its full signature, so a false positive candidate costs
# one comparison, while a false negative is a duplicate kept for good: the banding weighs misses only.
MAX_MISS_AT_THRESHOLD = 1e-4


@functools.lru_cache(maxsize=16)
def recall_first_bands(threshold: float, num_perm: int, max_miss: float = MAX_MISS_AT_THRESHOLD) -> tuple[int, int]:
    """The most rows per band (fewest candidates to verify) whose banding, ``num_perm // rows`` bands,
    still makes a pair at ``threshold`` a candidate with probability >= ``1 - max_miss``.

    Why not :func:`lsh_parameters`: balancing the S-curve's two areas picks 13 x 19 at 0.85/256, which
    finds a pair at J = 0.85 only 45% of the time (0.85 at J = 0.9). Here 0.85/256 gives 32 x 8:
    0.99996 at J = 0.85 (0.97 at J = 0.75, 0.12 at J = 0.5: candidates that verification rejects).
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if (1.0 - threshold**rows) ** bands <= max_miss:
            return bands, rows
    return num_perm, 1


def resolve_bands(threshold: float, num_perm: int, bands: int | None, rows: int | None) -> tuple[int, int]:
    """The configured bands x rows, or the default, :func:`recall_first_bands` (the only place it is
    chosen for ``prepare``)."""
    return (bands, rows) if bands is not None and rows is not None else recall_first_bands(threshold, num_perm)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band): a mixed combination of that band's ``rows`` values.

    A key collision between different bands' contents (probability ~2**-64 per pair) would only add
    a candidate, which verification rejects.
    """
    n = signatures.shape[0]
    keys = np.zeros((n, bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(_U64)
            key = np.full(n, _U64(band + 1) * _U64(0x9E3779B97F4A7C15), dtype=_U64)
            for column in range(rows):
                key ^= block[:, column]
                key *= _U64(0xBF58476D1CE4E5B9)
                key ^= key >> _U64(29)
            keys[:, band] = key
    return keys


def band_candidates(keys: np.ndarray) -> np.ndarray:
    """``int64[k, 2]`` pairs (first, other) of positions sharing this band's key: within a bucket
    every member is paired with the bucket's first (lowest-position) member."""
    n = len(keys)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(keys, kind="stable")  # stable: ties stay in index order
    sorted_keys = keys[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
    del sorted_keys
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    members = np.flatnonzero(~new_group)
    return np.stack([order[group_start[members]], order[members]], axis=1).astype(np.int64)


def smallest_member_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """For every element of ``0..n-1``, the smallest element connected to it through ``pairs``.

    The same answer as a union-find whose root is always the smallest member, computed without a
    Python loop over pairs: each round lowers both ends of every edge to the smaller of their labels
    (``np.minimum.at``), then jumps pointers until labels are stable. Labels only decrease and every
    label is a member's index, so it ends at each component's minimum, in O(log n) rounds on the
    chains LSH produces.
    """
    labels = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return labels
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        lower = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, lower)
        np.minimum.at(labels, b, lower)
        while True:  # pointer jumping: a label's own label is at most it
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before) and np.array_equal(labels[a], labels[b]):
            return labels


def exact_survivors(digests: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """For each eligible document, the first eligible document with the same content digest.

    One stable sort of the 16-byte digests (as two uint64 columns) instead of a dict over every
    document: equal digests become runs, and each run's first entry is its lowest index.
    """
    survivor = np.arange(len(digests), dtype=np.int64)
    index = np.flatnonzero(eligible)
    if len(index) < 2:
        return survivor
    words = np.ascontiguousarray(digests[index]).view("<u8").reshape(-1, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))  # stable: equal digests stay in index order
    ordered = words[order]
    new_run = np.empty(len(order), dtype=bool)
    new_run[0] = True
    new_run[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(order)), 0))
    survivor[index[order]] = index[order[run_start]]
    return survivor


# A candidate pair is merged when its estimated Jaccard is at least the threshold minus this many
# standard deviations of the estimate at the threshold, sqrt(t(1-t)/num_perm): 0.805 for 0.85 and
# 256 permutations. With the threshold itself as the cut, a pair at exactly J = 0.85 was merged only
# half the time (and one at 0.86 two times in three), so near-duplicate recall at the configured
# threshold stayed below 0.97 however good the banding; with 2 sigmas a pair at J = 0.85 is merged
# with probability 0.977. The price: pairs just below the threshold (J 0.80-0.85) are merged too,
# about half of those at 0.80; below 0.75 almost none.
VERIFY_SIGMAS = 2.0


def verification_floor(threshold: float, num_perm: int) -> float:
    """The estimated Jaccard from which a candidate pair counts as a duplicate (see VERIFY_SIGMAS)."""
    return threshold - VERIFY_SIGMAS * float(np.sqrt(threshold * (1.0 - threshold) / num_perm))


def near_survivors(
    band_columns: Iterable[np.ndarray],
    eligible: np.ndarray,
    signatures_of: Callable[[np.ndarray], np.ndarray],
    threshold: float,
    verify: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster eligible documents by LSH band keys (+ optional signature check against
    :func:`verification_floor`) and connected components.

    ``band_columns`` yields one ``uint64[n]`` array of keys per band, so only one band (8 bytes per
    document, plus its sort) is in memory at a time; full signatures are fetched through
    ``signatures_of(indices)`` for candidate pairs only.
    """
    n = len(eligible)
    survivor = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, dtype=np.float64)
    index = np.flatnonzero(eligible)
    found = [index[band_candidates(column[index])] for column in band_columns]
    if len(index) < 2:
        return survivor, similarity
    pairs = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), dtype=np.int64)
    if len(pairs) and verify:
        num_perm = signatures_of(pairs[:1, 0]).shape[1]
        pairs = pairs[_similarities(pairs, signatures_of) >= verification_floor(threshold, num_perm)]
    roots = smallest_member_roots(n, pairs)
    moved = np.flatnonzero(eligible & (roots != np.arange(n)))
    survivor[moved] = roots[moved]
    if len(moved):
        similarity[moved] = _similarities(np.stack([moved, roots[moved]], axis=1), signatures_of)
    return survivor, similarity


def _similarities(
    pairs: np.ndarray, signatures_of: Callable[[np.ndarray], np.ndarray], batch: int = 8192
) -> np.ndarray:
    """Estimated Jaccard of each pair, fetching signatures a batch at a time. A batch holds both
    sides' signatures and their comparison, 2.25 KB per pair at 256 permutations: 8192 pairs are
    18 MiB (65536 were 144 MiB, a fixed cost that looked per-document in the 5 GB run's reduce)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), batch):
        chunk = pairs[lo : lo + batch]
        out[lo : lo + len(chunk)] = (signatures_of(chunk[:, 0]) == signatures_of(chunk[:, 1])).mean(axis=1)
    return out
