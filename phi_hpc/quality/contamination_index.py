"""The decontamination index: everything derived from the benchmark files, as plain arrays.

Built in a few seconds and needed by every ``prepare`` worker, so it is cached on disk keyed by the
benchmark contents, the settings and :data:`INDEX_VERSION` (``decontamination/`` in phi-hpc's cache
folder, :func:`phi_hpc.paths.cache_root`); a missing or damaged cache file is simply rebuilt. The cache
is an ``.npz`` read with ``allow_pickle=False`` plus JSON, so loading it cannot run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phi_hpc.quality import code_ast
from phi_hpc.quality.benchmarks import Benchmarks
from phi_hpc.quality.decontamination_config import DecontaminationConfig
from phi_hpc.quality.lexical import informative_windows, shingles, skeleton
from phi_hpc.quality.tokens import tokenize

PARTS = ("prompt", "solution", "test")
INDEX_VERSION = 2  # bump when anything that shapes the index changes (tokens, skeleton, fingerprints)


@dataclass
class ContaminationIndex:
    """Everything derived from the benchmark files; plain arrays and strings, so it can be cached."""

    problem_names: list[str]
    ngram_keys: np.ndarray  # uint64, sorted
    ngram_problem: np.ndarray  # int32 index into problem_names, aligned with ngram_keys
    ngram_part: np.ndarray  # int8 index into PARTS
    skeleton_keys: np.ndarray  # uint64, sorted, unique
    skeleton_starts: np.ndarray  # int64, CSR offsets into skeleton_rows (len(keys) + 1)
    skeleton_rows: np.ndarray  # int32 skeleton row per posting
    reference_sizes: np.ndarray  # float64 distinct shingles per skeleton row
    row_reference: np.ndarray  # int32 reference index of each skeleton row
    reference_problems: list[str]
    reference_fingerprints: list[tuple[str, ...]]


def _build_ngram_arrays(benchmarks: Benchmarks, config: DecontaminationConfig):
    problems: dict[str, int] = {}
    owners: dict[int, set[int]] = {}
    first_part: dict[int, int] = {}
    n = config.ngram
    for part in benchmarks.parts:
        problem = problems.setdefault(part.problem, len(problems))
        tokens = tokenize(part.text)
        grams = shingles(tokens.hashes, n)
        grams = grams[informative_windows(tokens.strings(), n, config.min_ngram_words)]
        for gram in np.unique(grams).tolist():
            owners.setdefault(gram, set()).add(problem)
            first_part.setdefault(gram, PARTS.index(part.part))
    keep = sorted(g for g, p in owners.items() if len(p) <= config.max_problems_per_ngram)
    return (
        list(problems),
        np.array(keep, dtype=np.uint64),
        np.array([next(iter(owners[g])) for g in keep], dtype=np.int32),
        np.array([first_part[g] for g in keep], dtype=np.int8),
    )


def _build_ast_arrays(benchmarks: Benchmarks, config: DecontaminationConfig):
    # Problems whose solutions normalize to the same tree (HumanEval/56 and /61 differ only in
    # the bracket characters) share one reference, named after all of them.
    owners: dict[tuple[str, ...], list[str]] = {}
    sources: dict[tuple[str, ...], str] = {}
    for solution in benchmarks.solutions:
        tree = code_ast.parse_python(solution.source)
        if tree is None:
            continue
        for func in code_ast.iter_functions(tree):
            if solution.entry_point and func.name != solution.entry_point:
                continue
            fingerprint = code_ast.function_fingerprint(func)
            if len(fingerprint) < config.ast_min_tokens:
                continue
            problems = owners.setdefault(fingerprint, [])
            if solution.problem not in problems:
                problems.append(solution.problem)
            sources.setdefault(fingerprint, code_ast.ast.unparse(func))
    # Each reference gets one skeleton per rendering a copy might use (with and without type
    # annotations: for a short function they change a third of its shingles).
    reference_problems, fingerprints, shingle_sets, row_reference = [], [], [], []
    for fingerprint, problems in owners.items():
        renderings = {code_ast.strip_for_comparison(sources[fingerprint], keep) or "" for keep in (False, True)}
        sets = [np.unique(shingles(skeleton(tokenize(r).hashes), config.skeleton_shingle)) for r in sorted(renderings)]
        sets = [s for s in sets if len(s)]
        if sets:
            row_reference += [len(reference_problems)] * len(sets)
            reference_problems.append(",".join(problems))
            fingerprints.append(fingerprint)
            shingle_sets += sets
    # Inverted index shingle -> reference rows: sorted unique keys plus CSR-style postings.
    rows = (
        np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(shingle_sets)])
        if shingle_sets
        else np.empty(0, dtype=np.int32)
    )
    keys = np.concatenate(shingle_sets) if shingle_sets else np.empty(0, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    unique_keys, starts = np.unique(keys, return_index=True)
    return (
        unique_keys,
        np.append(starts, len(keys)).astype(np.int64),
        rows,
        np.array([len(s) for s in shingle_sets], dtype=np.float64),
        np.array(row_reference, dtype=np.int32),
        reference_problems,
        fingerprints,
    )


def build_index(benchmarks: Benchmarks, config: DecontaminationConfig) -> ContaminationIndex:
    names, ngram_keys, ngram_problem, ngram_part = _build_ngram_arrays(benchmarks, config)
    skeleton_keys, starts, rows, sizes, row_reference, ref_problems, fingerprints = _build_ast_arrays(
        benchmarks, config
    )
    return ContaminationIndex(
        names,
        ngram_keys,
        ngram_problem,
        ngram_part,
        skeleton_keys,
        starts,
        rows,
        sizes,
        row_reference,
        ref_problems,
        fingerprints,
    )


# -- the index cache: building it costs seconds, and every prepare worker process needs it ---------------


def default_cache_dir() -> Path:
    """The index cache: ``decontamination/`` in phi-hpc's cache folder (:func:`phi_hpc.paths.cache_root`)."""
    from phi_hpc.paths import cache_root

    return cache_root() / "decontamination"


def _cache_key(benchmarks: Benchmarks, config: DecontaminationConfig) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}|{sys.version_info[:2]}".encode())
    for part in benchmarks.parts:
        digest.update(f"{part.problem}\0{part.part}\0{part.text}\0".encode("utf-8", "surrogatepass"))
    for solution in benchmarks.solutions:
        digest.update(
            f"{solution.problem}\0{solution.entry_point}\0{solution.source}\0".encode("utf-8", "surrogatepass")
        )
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k in _INDEX_FIELDS}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()[:32]


# The settings that shape the index (thresholds applied at check time do not: one cached index serves
# every tau of a sweep).
_INDEX_FIELDS = ("ngram", "max_problems_per_ngram", "min_ngram_words", "ast_min_tokens", "skeleton_shingle")

_ARRAYS = (
    "ngram_keys",
    "ngram_problem",
    "ngram_part",
    "skeleton_keys",
    "skeleton_starts",
    "skeleton_rows",
    "reference_sizes",
    "row_reference",
)


def load_cached_index(cache_dir, benchmarks: Benchmarks, config: DecontaminationConfig) -> ContaminationIndex | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"index-{_cache_key(benchmarks, config)}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None  # absent or damaged: rebuild (and rewrite) it
    return ContaminationIndex(
        problem_names=meta["problem_names"],
        reference_problems=meta["reference_problems"],
        reference_fingerprints=[tuple(f) for f in meta["reference_fingerprints"]],
        **arrays,
    )


def store_cached_index(
    cache_dir, benchmarks: Benchmarks, config: DecontaminationConfig, index: ContaminationIndex
) -> None:
    if cache_dir is None:
        return
    from phi_hpc.fileio import atomic_write

    meta = {
        "problem_names": index.problem_names,
        "reference_problems": index.reference_problems,
        "reference_fingerprints": [list(f) for f in index.reference_fingerprints],
    }
    try:
        with atomic_write(
            Path(cache_dir) / f"index-{_cache_key(benchmarks, config)}.npz", "wb", encoding=None
        ) as handle:
            np.savez(
                handle,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                **{name: getattr(index, name) for name in _ARRAYS},
            )
    except OSError:
        pass  # a read-only home only costs the rebuild next time
