"""Code tokens as 64-bit hashes, computed with numpy over the document's bytes (no per-token Python).

Both prepare stages look at every document of a pretraining corpus, and a Python-level tokenizer
(a regex ``findall`` plus a hash call per token) costs as much as all of ``prepare`` together. Here
a document is lower-cased and split into words (runs of ``[a-z0-9_]`` and non-ASCII bytes) and single
punctuation bytes; each token's hash is a polynomial over its bytes, computed for all tokens at once
from one prefix sum (mod 2^64, with precomputed powers of the base and of its inverse):

    hash(b[s:e]) = sum_i b[i] * P^(e-1-i) = P^(e-1) * (C[e-1] - C[s-1]),   C[k] = sum_{i<=k} b[i] * P^-i

Hashes are deterministic across processes and machines, so indexes could be cached and shared.

Both stages tokenize the same batch of documents, so the last batch's results are kept (by object
identity; the documents themselves are held so identities cannot be reused).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse mod 2^64
_BASE_INVERSE = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_MIX = np.uint64(0x9E3779B97F4A7C15)

# Byte classes: 0 whitespace, 1 word, 2 punctuation.
_CLASS = np.full(256, 2, dtype=np.int8)
for _c in b" \t\n\r\x0b\x0c":
    _CLASS[_c] = 0
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _CLASS[_c] = 1
_CLASS[0x80:] = 1  # UTF-8 multi-byte sequences are parts of words


class _Powers:
    """P^k and P^-k for k < n, grown on demand and shared by all documents of a process."""

    def __init__(self) -> None:
        self.forward = np.ones(1, dtype=np.uint64)
        self.inverse = np.ones(1, dtype=np.uint64)
        self._lock = threading.Lock()

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > len(self.forward):
            with self._lock:
                size = max(n, 2 * len(self.forward), 1 << 16)
                with np.errstate(over="ignore"):
                    self.forward = np.cumprod(np.full(size, _BASE, dtype=np.uint64)) * _BASE_INVERSE
                    self.inverse = np.cumprod(np.full(size, _BASE_INVERSE, dtype=np.uint64)) * _BASE
        return self.forward[:n], self.inverse[:n]


_POWERS = _Powers()


@dataclass(frozen=True)
class Tokens:
    data: bytes  # the lower-cased UTF-8 document
    starts: np.ndarray  # int64 byte offsets
    ends: np.ndarray
    hashes: np.ndarray  # uint64, one per token

    def strings(self) -> list[str]:
        """The token texts (for the small benchmark side; documents never need them)."""
        return [self.data[s:e].decode("utf-8", "replace") for s, e in zip(self.starts.tolist(), self.ends.tolist())]

    @property
    def is_word(self) -> np.ndarray:
        if len(self.starts) == 0:
            return np.zeros(0, dtype=bool)
        return _CLASS[np.frombuffer(self.data, dtype=np.uint8)[self.starts]] == 1


_CHUNK = 1 << 22  # longer documents are tokenized in pieces cut at whitespace (bounded memory)


def tokenize(text: str) -> Tokens:
    data = text.lower().encode("utf-8", "surrogatepass")
    if len(data) <= _CHUNK:
        return _tokenize_bytes(data)
    raw = np.frombuffer(data, dtype=np.uint8)
    pieces, offset = [], 0
    while offset < len(data):
        cut = min(offset + _CHUNK, len(data))
        if cut < len(data):
            spaces = np.flatnonzero(_CLASS[raw[cut : cut + _CHUNK]] == 0)
            cut = cut + int(spaces[0]) if len(spaces) else min(cut + _CHUNK, len(data))
        piece = _tokenize_bytes(data[offset:cut])
        pieces.append((piece.starts + offset, piece.ends + offset, piece.hashes))
        offset = cut
    return Tokens(data, *(np.concatenate([p[i] for p in pieces]) for i in range(3)))


def _tokenize_bytes(data: bytes) -> Tokens:
    raw = np.frombuffer(data, dtype=np.uint8)
    n = len(raw)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Tokens(data, empty, empty, np.zeros(0, dtype=np.uint64))
    cls = _CLASS[raw]
    word = cls == 1
    previous_word = np.concatenate(([False], word[:-1]))
    next_word = np.concatenate((word[1:], [False]))
    starts = np.flatnonzero((word & ~previous_word) | (cls == 2))
    word_ends = np.flatnonzero(word & ~next_word) + 1
    ends = starts + 1
    word_tokens = word[starts]
    ends[word_tokens] = word_ends
    forward, inverse = _POWERS.get(n)
    with np.errstate(over="ignore"):
        prefix = np.cumsum(raw.astype(np.uint64) * inverse, dtype=np.uint64)
        before = np.where(starts > 0, prefix[starts - 1], np.uint64(0))
        hashes = (prefix[ends - 1] - before) * forward[ends - 1]
        hashes = (hashes ^ (hashes >> np.uint64(29))) * _MIX  # spread the low bits (used for bucketing)
    return Tokens(data, starts, ends, hashes)


def hash_tokens(words) -> np.ndarray:
    """Hashes of given token strings, exactly as :func:`tokenize` hashes them inside documents."""
    out = []
    for word in words:
        tokens = tokenize(word)
        if len(tokens.hashes) != 1:
            raise ValueError(f"{word!r} is not a single token")
        out.append(tokens.hashes[0])
    return np.array(sorted(set(out)), dtype=np.uint64)


class BatchCache:
    """``tokenize`` results of the most recent documents, keyed by object identity."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._entries: dict[int, tuple[str, Tokens]] = {}
        self._lock = threading.Lock()

    def get(self, text: str) -> Tokens:
        key = id(text)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] is text:
            return hit[1]
        tokens = tokenize(text)
        with self._lock:
            if len(self._entries) >= self.capacity:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (text, tokens)
        return tokens


SHARED_CACHE = BatchCache()


class HashSet:
    """Fast membership of many uint64 hashes in a fixed set: a bitmap on the top bits rules out almost
    every non-member with one gather; the few survivors are confirmed by binary search."""

    def __init__(self, keys: np.ndarray, bits: int = 20):
        self.keys = np.unique(np.asarray(keys, dtype=np.uint64))
        self._shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[self.keys >> self._shift] = True

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, values: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(len(values), dtype=bool)
        mask = self._bitmap[values >> self._shift]
        candidates = np.flatnonzero(mask)
        if len(candidates):
            found = values[candidates]
            pos = np.minimum(np.searchsorted(self.keys, found), len(self.keys) - 1)
            mask[candidates] = self.keys[pos] == found
        return mask

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Index in ``keys`` of each value that is a member (values must all be members)."""
        return np.searchsorted(self.keys, values)


class SmallSet:
    """Exact membership in a small set with one gather: a direct-mapped table on the top bits, sized
    so that no two members share a slot (a few hundred keywords fit in 2^12..2^16 slots)."""

    def __init__(self, keys: np.ndarray):
        keys = np.unique(np.asarray(keys, dtype=np.uint64))
        if (keys == 0).any():
            raise ValueError("0 is the empty-slot marker")
        for bits in range(max(int(len(keys)).bit_length() + 2, 8), 25):
            slots = keys >> np.uint64(64 - bits)
            if len(np.unique(slots)) == len(keys):
                break
        else:
            raise ValueError("keys collide on every table size")
        self._shift = np.uint64(64 - bits)
        self._table = np.zeros(1 << bits, dtype=np.uint64)
        self._table[slots] = keys

    def contains(self, values: np.ndarray) -> np.ndarray:
        return self._table[values >> self._shift] == values
