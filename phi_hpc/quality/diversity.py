"""Diversity of synthetic data: near-duplicate rejection (MinHash-LSH of :mod:`phi_hpc.data.minhash`),
topic trees and function-name seeds that widen the prompt space, and statistics that show the result.

phi-1 (section 2.2) found that asking an LLM the same thing yields the same few answers: with 40
topics, a billion tokens means tens of thousands of items per topic. Exact dedup misses the
answers that differ by a word; the MinHash index here catches them (Jaccard of 5-word shingles,
the same hashing ``prepare`` dedups with), at 64 uint32 + a few band keys per item in memory.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter

import numpy as np

NEAR_DUPLICATE_JACCARD = 0.7  # synthetic items this similar say the same thing


class NearDuplicateIndex:
    """Thread-safe LSH index of the items kept so far: ``add(text)`` returns the index of a kept item
    it nearly duplicates (then it is not added), else None (and it is added)."""

    def __init__(self, threshold: float = NEAR_DUPLICATE_JACCARD, num_perm: int = 64, ngram: int = 5):
        from phi_hpc.data.dedup import lsh_parameters
        from phi_hpc.data.minhash import MinHasher

        self.threshold = threshold
        self._hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=42)
        self.bands, self.rows = lsh_parameters(threshold, num_perm)
        self._buckets: dict[int, list[int]] = {}
        self._signatures = np.zeros((1024, num_perm), dtype=np.uint32)
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def _signature(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        from phi_hpc.data.dedup import band_keys

        signature = self._hasher.signatures([text])
        return signature[0], band_keys(signature, self.bands, self.rows)[0]

    def add(self, text: str) -> int | None:
        from phi_hpc.data.minhash import estimated_jaccard

        signature, keys = self._signature(text)
        with self._lock:
            candidates = {i for key in keys.tolist() for i in self._buckets.get(key, ())}
            for other in sorted(candidates):
                if estimated_jaccard(signature, self._signatures[other]) >= self.threshold:
                    return other
            if self._count == len(self._signatures):
                self._signatures = np.concatenate([self._signatures, np.zeros_like(self._signatures)])
            self._signatures[self._count] = signature
            for key in keys.tolist():
                self._buckets.setdefault(key, []).append(self._count)
            self._count += 1
        return None


# -- prompt seeds ---------------------------------------------------------------------------------

VERBS = (
    "count",
    "find",
    "merge",
    "split",
    "sort",
    "filter",
    "parse",
    "validate",
    "compute",
    "convert",
    "rotate",
    "reverse",
    "compress",
    "decode",
    "encode",
    "group",
    "rank",
    "match",
    "normalize",
    "flatten",
    "summarize",
    "schedule",
    "simulate",
    "estimate",
    "balance",
    "partition",
    "search",
    "generate",
    "transpose",
    "interleave",
)
NOUNS = (
    "words",
    "intervals",
    "primes",
    "digits",
    "matrix",
    "grid_paths",
    "anagrams",
    "palindromes",
    "brackets",
    "coins",
    "stairs",
    "islands",
    "meetings",
    "temperatures",
    "grades",
    "inventory",
    "tickets",
    "votes",
    "sentences",
    "timestamps",
    "polygon_area",
    "fractions",
    "roman_numerals",
    "binary_strings",
    "subsets",
    "permutations",
    "queue_events",
    "bank_transactions",
    "word_frequencies",
    "shortest_route",
    "moving_average",
    "run_lengths",
    "duplicate_files",
    "ip_addresses",
    "recipe_scaling",
    "seat_assignment",
    "chess_moves",
    "dice_rolls",
    "calendar_days",
    "unit_conversions",
)


def function_names(seed: int = 0) -> list[str]:
    """Built-in function-name seeds: every verb_noun pair (1200 names), in a seeded order."""
    names = [f"{verb}_{noun}" for verb in VERBS for noun in NOUNS]
    random.Random(seed).shuffle(names)
    return names


def load_lines(path: str, what: str) -> list[str]:
    """Non-empty lines of a seed file (topics or function names); a jsonl topic tree gives its leaves."""
    from pathlib import Path

    from phi_hpc.errors import UsageError
    from phi_hpc.fileio import iter_entries

    file = Path(path)
    if not file.is_file():
        raise UsageError(
            f"--{what} {path} does not exist", "create it with phi-hpc synth topics, or write one per line"
        )
    out = []
    for entry in iter_entries(file):
        if isinstance(entry, str):
            out.append(entry)
        elif entry.get("leaf"):
            out.append(" > ".join(entry["path"]))
    if not out:
        raise UsageError(f"--{what} {path}: no entries", "one per line, or a topic tree from phi-hpc synth topics")
    return out


_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*(.+?)\s*$")


def parse_list(answer: str, limit: int) -> list[str]:
    """Items of a bulleted or numbered list answer, de-duplicated, in order."""
    seen, out = set(), []
    for line in answer.splitlines():
        match = _LIST_ITEM.match(line)
        if not match:
            continue
        item = match.group(1).strip().strip("*").strip()
        key = item.lower()
        if item and len(item) <= 120 and key not in seen and not item.endswith(":"):
            seen.add(key)
            out.append(item)
    return out[:limit]


# -- statistics -----------------------------------------------------------------------------------


class DiversityStats:
    """Counts over the items of a run: distinct topics and names, distinct word 3-grams, lengths.

    Distinct 3-grams are counted exactly over the first ``max_ngrams`` 3-grams (64-bit hashes), then
    the ratio is reported on that prefix (``ngram_sample`` says so)."""

    def __init__(self, max_ngrams: int = 2_000_000):
        self.topics: Counter[str] = Counter()
        self.names: Counter[str] = Counter()
        self._ngrams: set[int] = set()
        self._seen_ngrams = 0
        self._max = max_ngrams
        self.items = 0
        self.words = 0

    def add(self, text: str, spec: dict) -> None:
        self.items += 1
        self.topics[spec.get("topic", "")] += 1
        if spec.get("function_name"):
            self.names[spec["function_name"]] += 1
        words = text.split()
        self.words += len(words)
        for i in range(len(words) - 2):
            if self._seen_ngrams >= self._max:
                break
            self._seen_ngrams += 1
            self._ngrams.add(hash((words[i], words[i + 1], words[i + 2])))

    def summary(self) -> dict:
        top = self.topics.most_common(1)
        return {
            "items": self.items,
            "distinct_topics": len(self.topics),
            "max_items_per_topic": top[0][1] if top else 0,
            "distinct_function_names": len(self.names),
            "distinct_3gram_ratio": round(len(self._ngrams) / self._seen_ngrams, 4) if self._seen_ngrams else None,
            "ngram_sample": self._seen_ngrams,
            "mean_words": round(self.words / self.items, 1) if self.items else 0,
        }
