"""The vectorized exact dedup and connected components agree with the obvious Python versions
(a dict of first occurrences; a union-find rooted at the smallest member) on random inputs with
long chains, stars and many duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from phi_hpc.data.dedup import exact_survivors, smallest_member_roots


def reference_exact(digests, eligible):
    survivor = np.arange(len(digests))
    first = {}
    for i in np.flatnonzero(eligible):
        survivor[i] = first.setdefault(digests[i].tobytes(), int(i))
    return survivor


def reference_roots(n, pairs):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


@pytest.mark.parametrize("seed", range(6))
def test_exact_survivors_match_a_dict_of_first_occurrences(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    pool = rng.integers(0, 256, size=(max(1, n // 3), 16), dtype=np.uint8)
    pool[:, :15] = 0 if seed % 2 else pool[:, :15]  # digests that differ in the last byte only
    digests = pool[rng.integers(0, len(pool), size=n)]
    eligible = rng.random(n) < 0.8
    assert np.array_equal(exact_survivors(digests, eligible), reference_exact(digests, eligible))


@pytest.mark.parametrize("seed", range(6))
def test_components_match_a_union_find_rooted_at_the_smallest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    pieces = [rng.integers(0, n, size=(int(rng.integers(0, 2 * n)), 2))]
    chain = rng.permutation(n)[: n // 2]  # a long chain in random order: the worst case for labels
    pieces.append(np.stack([chain[:-1], chain[1:]], axis=1))
    pieces.append(np.stack([np.full(50, n - 1), rng.integers(0, n, 50)], axis=1))  # a star
    pairs = np.concatenate(pieces).astype(np.int64)
    pairs = pairs[rng.permutation(len(pairs))]
    assert np.array_equal(smallest_member_roots(n, pairs), reference_roots(n, pairs))
    assert np.array_equal(smallest_member_roots(n, pairs[:0]), np.arange(n))
