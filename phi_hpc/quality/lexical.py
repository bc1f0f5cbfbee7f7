"""Lexical views of code for decontamination: n-gram hashes, the identifier-free skeleton, and
which benchmark n-grams are evidence at all. Everything works on the token hashes of
:mod:`phi_hpc.quality.tokens`, vectorized with numpy.
"""

from __future__ import annotations

import keyword

import numpy as np

from phi_hpc.quality import code_ast
from phi_hpc.quality.tokens import SmallSet, hash_tokens

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_IDENTIFIER = np.uint64(0xA5A5_5A5A_C3C3_3C3C)  # the skeleton's symbol for any name or literal

_COMMON_WORDS = frozenset(w.lower() for w in keyword.kwlist + keyword.softkwlist + ["self", "cls"]) | frozenset(
    b.lower() for b in code_ast.BUILTIN_NAMES
)
_QUOTES = frozenset({"'", '"'})


def _is_distinctive(name: str) -> bool:
    """Compound names like ``square_perimeter`` are rare outside the problem that coined them."""
    return len(name) >= 8 and "_" in name.strip("_") and not name.startswith("__")


def informative_windows(words: list[str], n: int, min_words: int) -> np.ndarray:
    """Mask over the n-gram windows of a token list: True where the window is evidence of copying.

    Windows made of numbers, punctuation, one-letter names and keywords (``[1, 2, 3, 4, 5, ...]``,
    ``('a', 'b', 'c')``, ``{'one': 1, 'two': 2, ...}``) occur in benchmark tests and in ordinary
    code alike, so they prove nothing; quoted words do not count as names. A window counts when it
    names ``min_words`` distinct things, or one distinctive compound name (MBPP's asserts,
    ``assert square_perimeter(10)==40``, name nothing else).
    """
    names = [
        t if len(t) > 1 and t[0].isalpha() and t not in _COMMON_WORDS and prev not in _QUOTES else None
        for prev, t in zip([""] + words, words)
    ]
    windows = max(len(words) - n + 1, 0)
    if windows == 0:
        return np.zeros(0, dtype=bool)
    distinctive = np.array([bool(t) and _is_distinctive(t) for t in names], dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(distinctive)])
    has_distinctive = (cumulative[n : n + windows] - cumulative[:windows]) > 0
    many_names = np.array([len(set(names[i : i + n]) - {None}) >= min_words for i in range(windows)], dtype=bool)
    return has_distinctive | many_names


def shingles(hashes: np.ndarray, n: int) -> np.ndarray:
    """Order-sensitive hashes of every window of ``n`` consecutive tokens (uint64, wrapping).

    The window hash is the polynomial sum_j t[i+j] * M^(n-1-j). Windows are combined by doubling,
    H[a+b](i) = H[a](i) * M^b + H[b](i+a), so a 13-gram costs 5 vector passes instead of 12.
    """
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        windows = {1: hashes}
        size = 1
        while size * 2 <= n:  # H[1], H[2], H[4], H[8], ...
            previous = windows[size]
            windows[size * 2] = previous[:-size] * _MULTIPLIER ** np.uint64(size) + previous[size:]
            size *= 2
        out, width = windows[size], size
        for part in sorted(windows, reverse=True):  # add the binary digits of n that are left
            if width + part <= n:
                out = out[: len(out) - part] * _MULTIPLIER ** np.uint64(part) + windows[part][width:]
                width += part
        out = out[:count].copy()
        out ^= out >> np.uint64(31)  # top bits feed HashSet's bitmap
    return out


# The skeleton keeps keywords, builtins and punctuation and turns every other word or number into
# one symbol. A one-token string literal ('(' or 'a') becomes that symbol too, so literal contents
# do not leak into it.
_SKELETON_KEPT = SmallSet(
    hash_tokens(
        {w.lower() for w in keyword.kwlist + keyword.softkwlist}
        | {b.lower() for b in code_ast.BUILTIN_NAMES if b.isidentifier()}
        | set("!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~")
    )
)
_QUOTE_HASHES = hash_tokens(["'", '"'])


def skeleton(hashes: np.ndarray) -> np.ndarray:
    out = np.where(_SKELETON_KEPT.contains(hashes), hashes, _IDENTIFIER)
    if len(out) > 2:
        quoted = ((out[:-2] == _QUOTE_HASHES[0]) | (out[:-2] == _QUOTE_HASHES[1])) & (out[:-2] == out[2:])
        out[1:-1][quoted] = _IDENTIFIER
    return out
