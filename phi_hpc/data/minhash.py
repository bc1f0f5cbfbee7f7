"""MinHash signatures for whole batches of documents at numpy speed.

Why not datasketch: it hashes every shingle in Python (one ``sha1`` call each), which is the slow
part. Here the per-byte and per-word work is a handful of vectorized passes over the batch's UTF-8
bytes, and only the final "256 permutations of every shingle" step touches ``shingles x permutations``
elements, in cache-sized chunks.

The recipe, step by step (all arithmetic is uint64 and wraps mod 2**64 on purpose):

1. Words are maximal runs of ``[A-Za-z0-9_]`` and non-ASCII bytes; everything else (spaces,
   punctuation, newlines) separates them. So reflowed whitespace or moved brackets do not change
   the shingle set, only edits to names and literals do.
2. A word's hash is a polynomial hash of its bytes, taken from one prefix sum over the whole batch:
   ``(H[end] - H[start]) * P**-start`` (``P`` is odd, so it is invertible mod 2**64), then mixed
   with the splitmix64 finalizer so that similar words get unrelated hashes.
3. A shingle is ``ngram`` consecutive words of one document, hashed order-sensitively from the
   word hashes. A document shorter than ``ngram`` words is one shingle of all its words.
4. Permutation ``i`` maps the high 32 bits ``x`` of a shingle hash to ``a_i * x mod 2**32``
   (``a_i`` odd: a bijection of the 32-bit integers). The signature entry is the minimum over the
   document's shingles. Because ``x`` is already the output of a strong mixer, these cheap
   multiplicative permutations behave like random ones; ``tests/data/test_minhash.py`` checks the estimates
   against exact Jaccard similarities.

Two documents' estimated Jaccard similarity is the fraction of equal signature entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_U64 = np.uint64
_COMBINE = _U64(0x9E3779B97F4A7C15)

# Byte classes: 1 where a byte belongs to a word, as a bytes.translate table (a C loop at memory
# speed, several times faster than a numpy lookup-table gather).
_WORD_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_" + bytes(range(0x80, 0x100))
_WORD_TABLE = bytes(1 if b in _WORD_CHARS else 0 for b in range(256))
_SEPARATOR = b"\n"

# Shingles per (permutations x shingles) block: 256 x 1024 x 4 B = 1 MiB, which stays in cache
# between the multiply and the min passes (measured fastest of 64..8192).
_CHUNK_SHINGLES = 1024


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place on a uint64 array (good avalanche, three multiplies)."""
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


_LOW_BYTES_MASK = np.array([(1 << (8 * r)) - 1 for r in range(9)], dtype=_U64)  # keep the first r bytes


def _word_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash every word ``data[starts[i]:ends[i]]`` exactly, 8 bytes per vectorized step.

    ``data`` must be followed by at least 8 readable bytes (the caller pads it). Eight bytes at any
    offset are read as one little-endian uint64 through a 1-byte-strided view; bytes past the word's
    end are masked off. The first step covers every word at once; only the few words longer than
    8 bytes take further (indexed) steps.
    """
    unaligned = np.ndarray(shape=(len(data) - 8,), dtype="<u8", buffer=data, offset=0, strides=(1,))
    lengths = ends - starts
    with np.errstate(over="ignore"):
        hashes = lengths.astype(_U64) * _COMBINE
        hashes ^= unaligned[starts] & _LOW_BYTES_MASK[np.minimum(lengths, 8)]
        hashes *= _U64(0xBF58476D1CE4E5B9)
        active = np.flatnonzero(lengths > 8)
        step = 1
        while active.size:
            chunk = unaligned[starts[active] + 8 * step]
            chunk &= _LOW_BYTES_MASK[np.minimum(lengths[active] - 8 * step, 8)]
            hashes[active] = (hashes[active] ^ chunk) * _U64(0xBF58476D1CE4E5B9)
            step += 1
            active = active[lengths[active] > 8 * step]
        return _mix64(hashes)


BACKENDS = ("numpy", "rensa")


def rensa_version() -> str | None:
    """The installed rensa's version and digest-algorithm version (they decide its signatures), or None."""
    try:
        from importlib.metadata import version

        import rensa
    except ImportError:
        return None
    return f"{version('rensa')}/algorithm-{rensa.RMinHash.ALGORITHM_VERSION}"


@dataclass(frozen=True)
class MinHasher:
    """Seeded MinHash with ``num_perm`` permutations over word ``ngram`` shingles.

    ``backend`` decides only the last step (permuting the shingle hashes and taking minima):
    ``numpy`` (below; this class's default, which the synthetic-data diversity index relies on) or
    ``rensa`` (a maintained Rust MinHash library, 2.5x faster per document here, shingling included,
    with the same measured accuracy; its permutations are its own, so its signatures differ from
    numpy's and runs record which was used). ``prepare``'s default is rensa, decided by
    ``DedupConfig.minhash``. Shingling is the same for both.
    """

    num_perm: int = 256
    ngram: int = 5
    seed: int = 42
    backend: str = "numpy"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown MinHash backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.backend == "rensa" and rensa_version() is None:
            from phi_hpc.errors import UsageError

            raise UsageError(
                "dedup.minhash=rensa but the rensa package is not installed",
                "pip install rensa==0.5.0 (a dependency of phi-hpc), or --set dedup.minhash=numpy",
            )
        rng = np.random.default_rng(self.seed)
        top = np.iinfo(np.uint32).max
        a = rng.integers(0, top, size=self.num_perm, dtype=np.uint32, endpoint=True) | np.uint32(1)
        object.__setattr__(self, "_a", a)

    # -- shingles -------------------------------------------------------------------------------
    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every document's shingles, concatenated, plus each document's shingle count."""
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        return self.shingle_hashes_of_bytes(encoded)

    def shingle_hashes_of_bytes(self, encoded: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        n_docs = len(encoded)
        if n_docs == 0:
            return np.zeros(0, _U64), np.zeros(0, np.int64)
        raw = _SEPARATOR.join(encoded) + bytes(16)
        data = np.frombuffer(raw, dtype=np.uint8)
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=n_docs)
        doc_starts = np.zeros(n_docs, dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=doc_starts[1:])

        # The zero padding is not a word byte, so every word ends inside: word boundaries alternate
        # start, end, start, end...
        is_word = np.frombuffer(raw.translate(_WORD_TABLE), dtype=np.int8)
        boundaries = np.flatnonzero(np.diff(is_word, prepend=np.int8(0)))
        starts, ends = boundaries[0::2], boundaries[1::2]
        words = _word_hashes(data, starts, ends)

        # Words per document from one search per document (not one per word), then repeated.
        first_words = np.searchsorted(starts, doc_starts, side="left")
        words_per_doc = np.diff(first_words, append=len(starts))
        word_doc = np.repeat(np.arange(n_docs), words_per_doc)
        shingles, counts = self._combine_words(words, word_doc, words_per_doc, n_docs)
        return shingles, counts

    def _combine_words(self, words, word_doc, words_per_doc, n_docs):
        n = self.ngram
        total = len(words)
        with np.errstate(over="ignore"):
            if total >= n:
                span = total - n + 1
                hashes = words[:span].copy()
                for offset in range(1, n):
                    hashes *= _COMBINE
                    hashes += words[offset : offset + span]
                _mix64(hashes)
                valid = word_doc[:span] == word_doc[n - 1 : n - 1 + span]
                full = hashes[valid]
                full_doc = word_doc[:span][valid]
            else:
                full = np.zeros(0, _U64)
                full_doc = np.zeros(0, np.int64)
            short_docs = np.flatnonzero((words_per_doc > 0) & (words_per_doc < n))
            if len(short_docs) == 0:
                return full, np.bincount(full_doc, minlength=n_docs).astype(np.int64)
            # Documents with fewer than ``ngram`` words: one shingle made of all their words.
            first_word = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(words_per_doc, out=first_word[1:])
            extra = np.empty(len(short_docs), dtype=_U64)
            for i, doc in enumerate(short_docs):
                h = _U64(0)
                for w in words[first_word[doc] : first_word[doc + 1]]:
                    h = h * _COMBINE + w
                extra[i] = h
            _mix64(extra)
        all_hashes = np.concatenate([full, extra])
        all_docs = np.concatenate([full_doc, short_docs])
        order = np.argsort(all_docs, kind="stable")
        return all_hashes[order], np.bincount(all_docs, minlength=n_docs).astype(np.int64)

    # -- signatures -----------------------------------------------------------------------------
    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """``uint32[len(texts), num_perm]``; a document without words gets all-ones (matches nothing
        but other empty documents, which exact dedup handles anyway)."""
        shingles, counts = self.shingle_hashes(texts)
        return self.signatures_from_shingles(shingles, counts)

    def signatures_from_shingles(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Apply every permutation to every shingle and keep each document's minima.

        The permutations are ``x -> a*x mod 2**32`` (``a`` odd) on the high 32 bits of the already
        well-mixed 64-bit shingle hash. This step is where nearly all the time goes, so it is as
        lean as it can be: uint32 lanes (twice as many per SIMD instruction as uint64), one
        multiply and one min per element. An affine ``a*x + b`` (datasketch's "affine32") costs a
        third more and measured no more accurate here (bias and error spread equal within noise
        over 900 pairs); ``tests/data/test_dedup.py`` holds the accuracy to account.
        """
        n_docs = len(counts)
        if self.backend == "rensa":
            return self._rensa_signatures(shingles, counts)
        result = np.full((n_docs, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if not len(shingles):
            return result
        keys = (shingles >> _U64(32)).astype(np.uint32)
        bounds = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        # Permutations x shingles, so that each document's minimum runs along contiguous memory.
        block = np.empty((self.num_perm, _CHUNK_SHINGLES), dtype=np.uint32)
        for lo in range(0, len(keys), _CHUNK_SHINGLES):
            hi = min(lo + _CHUNK_SHINGLES, len(keys))
            columns = block[:, : hi - lo]
            np.multiply(self._a[:, None], keys[None, lo:hi], out=columns)
            first = int(np.searchsorted(bounds, lo, side="right")) - 1
            last = int(np.searchsorted(bounds, hi, side="left"))
            # Every document with shingles in this chunk: one reduceat gives all their minima.
            starts = np.maximum(bounds[first:last], lo)
            present = starts < np.minimum(bounds[first + 1 : last + 1], hi)
            docs = np.arange(first, last)[present]
            minima = np.minimum.reduceat(columns, starts[present] - lo, axis=1)
            result[docs] = np.minimum(result[docs], minima.T)
        return result

    def _rensa_signatures(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """rensa's ``RMinHash`` digests of the same shingle hashes, one call for the whole batch (a
        document without shingles gets all-ones, as with numpy)."""
        import rensa

        result = np.full((len(counts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        present = np.flatnonzero(counts)
        if not len(present):
            return result
        offsets = np.zeros(len(present) + 1, dtype=np.uint64)
        np.cumsum(counts[present], out=offsets[1:])
        digests = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            np.ascontiguousarray(shingles, dtype=_U64), offsets, self.num_perm, self.seed
        )
        result[present] = np.array(digests.to_rows(), dtype=np.uint32)
        return result


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal entries: an unbiased estimate of the shingle sets' Jaccard similarity."""
    return float(np.count_nonzero(sig_a == sig_b)) / sig_a.shape[-1]


def word_shingles(text: str, ngram: int = 5) -> set[tuple[str, ...]]:
    """The exact shingle set MinHasher estimates over (slow, pure Python: for tests and the benchmark)."""
    import re

    words = re.findall(rb"[A-Za-z0-9_\x80-\xff]+", text.encode("utf-8", "surrogatepass"))
    if not words:
        return set()
    if len(words) < ngram:
        return {tuple(words)}
    return {tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}
