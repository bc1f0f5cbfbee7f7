"""Keep HumanEval and MBPP out of the training data (phi-1 paper, section 5).

Three signals, cheapest first, each run on every document:

1. **13-gram overlap** with any benchmark prompt, solution or test. Text is lower-cased and split into
   words and punctuation, so whitespace and formatting never matter. N-grams that occur in several
   problems (``def check(candidate):`` boilerplate) are not evidence of anything and are left out.
2. **Rename-invariant AST similarity** with the benchmark solutions (:mod:`phi_hpc.quality.code_ast`).
   Parsing is the expensive part, so a lexical pre-filter decides which documents get parsed: the
   document's token stream with identifiers and literals collapsed to one symbol ("skeleton") must
   contain most (``skeleton_containment``) of some solution's skeleton shingles. Renaming and
   reformatting keep the skeleton almost intact (type annotations, which copies add or drop, are
   indexed both ways), and the tests check that every disguised HumanEval solution above the size
   threshold still gets through. A document that passes is parsed, and each of its functions must
   pass on its own span before it is normalized and aligned.
3. Optionally, **embedding distance**: cosine similarity of hashed-token vectors (the classifier's
   CPU embedder) between the document and each solution, for paraphrases that change structure.

Tokens and their hashes come from :mod:`phi_hpc.quality.tokens` (numpy over the bytes, no Python
per token), shared with the quality classifier when both stages see the same batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from phi_hpc.data.filters import Verdict
from phi_hpc.quality import code_ast
from phi_hpc.quality.benchmarks import Benchmarks, load_benchmarks
from phi_hpc.quality.tokens import SHARED_CACHE, HashSet, SmallSet, hash_tokens, tokenize

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_IDENTIFIER = np.uint64(0xA5A5_5A5A_C3C3_3C3C)  # the skeleton's symbol for any name or literal


@dataclass(frozen=True)
class DecontaminationConfig:
    ngram: int = 13
    min_ngram_matches: int = 1  # shared distinct n-grams with one problem needed to flag
    max_problems_per_ngram: int = 1  # an n-gram shared by more problems is boilerplate, not evidence
    min_ngram_words: int = 3  # distinct names (2+ letters, not keywords/builtins) an indexed n-gram needs
    ast_threshold: float = 0.9  # SequenceMatcher ratio of normalized ASTs
    ast_min_tokens: int = 35  # smaller solutions are too generic to compare structurally
    skeleton_shingle: int = 8
    skeleton_containment: float = 0.75  # pre-filter: share of a solution's skeleton shingles in the doc
    embedding_threshold: float | None = None  # cosine similarity; None disables the embedding check
    embedding_dim: int = 4096


@dataclass(frozen=True)
class Finding:
    """Why one document was flagged: the first signal that fired, and the problem it points at."""

    problem: str  # "HumanEval/12"; comma-separated when several problems share one solution's structure
    method: str  # "ngram" | "ast" | "embedding"
    score: float
    detail: str

    def reason(self) -> str:
        return f"{self.method} match with {self.problem}: {self.detail}"


_COMMON_WORDS = frozenset(w.lower() for w in keyword.kwlist + keyword.softkwlist + ["self", "cls"]) \
    | frozenset(b.lower() for b in code_ast.BUILTIN_NAMES)
_QUOTES = frozenset({"'", '"'})


def _is_distinctive(name: str) -> bool:
    """Compound names like ``square_perimeter`` are rare outside the problem that coined them."""
    return len(name) >= 8 and "_" in name.strip("_") and not name.startswith("__")


def _informative_windows(words: list[str], n: int, min_words: int) -> np.ndarray:
    """Mask over the n-gram windows of a token list: True where the window is evidence of copying.

    Windows made of numbers, punctuation, one-letter names and keywords (``[1, 2, 3, 4, 5, ...]``,
    ``('a', 'b', 'c')``, ``{'one': 1, 'two': 2, ...}``) occur in benchmark tests and in ordinary
    code alike, so they prove nothing; quoted words do not count as names. A window counts when it
    names ``min_words`` distinct things, or one distinctive compound name (MBPP's asserts,
    ``assert square_perimeter(10)==40``, name nothing else).
    """
    names = [t if len(t) > 1 and t[0].isalpha() and t not in _COMMON_WORDS and prev not in _QUOTES else None
             for prev, t in zip([""] + words, words)]
    windows = max(len(words) - n + 1, 0)
    if windows == 0:
        return np.zeros(0, dtype=bool)
    distinctive = np.array([bool(t) and _is_distinctive(t) for t in names], dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(distinctive)])
    has_distinctive = (cumulative[n:n + windows] - cumulative[:windows]) > 0
    many_names = np.array([len(set(names[i:i + n]) - {None}) >= min_words for i in range(windows)], dtype=bool)
    return has_distinctive | many_names


def _shingles(hashes: np.ndarray, n: int) -> np.ndarray:
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
                out = out[:len(out) - part] * _MULTIPLIER ** np.uint64(part) + windows[part][width:]
                width += part
        out = out[:count].copy()
        out ^= out >> np.uint64(31)  # top bits feed HashSet's bitmap
    return out


# The skeleton keeps keywords, builtins and punctuation and turns every other word or number into
# one symbol. A one-token string literal ('(' or 'a') becomes that symbol too, so literal contents
# do not leak into it.
_SKELETON_KEPT = SmallSet(hash_tokens({w.lower() for w in keyword.kwlist + keyword.softkwlist}
                                     | {b.lower() for b in code_ast.BUILTIN_NAMES if b.isidentifier()}
                                     | set("!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~")))
_QUOTE_HASHES = hash_tokens(["'", '"'])


def skeleton(hashes: np.ndarray) -> np.ndarray:
    out = np.where(_SKELETON_KEPT.contains(hashes), hashes, _IDENTIFIER)
    if len(out) > 2:
        quoted = ((out[:-2] == _QUOTE_HASHES[0]) | (out[:-2] == _QUOTE_HASHES[1])) & (out[:-2] == out[2:])
        out[1:-1][quoted] = _IDENTIFIER
    return out


PARTS = ("prompt", "solution", "test")
INDEX_VERSION = 2  # bump when anything that shapes the index changes (tokens, skeleton, fingerprints)


@dataclass
class _Index:
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
        grams = _shingles(tokens.hashes, n)
        grams = grams[_informative_windows(tokens.strings(), n, config.min_ngram_words)]
        for gram in np.unique(grams).tolist():
            owners.setdefault(gram, set()).add(problem)
            first_part.setdefault(gram, PARTS.index(part.part))
    keep = sorted(g for g, p in owners.items() if len(p) <= config.max_problems_per_ngram)
    return (list(problems), np.array(keep, dtype=np.uint64),
            np.array([next(iter(owners[g])) for g in keep], dtype=np.int32),
            np.array([first_part[g] for g in keep], dtype=np.int8))


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
        sets = [np.unique(_shingles(skeleton(tokenize(r).hashes), config.skeleton_shingle)) for r in sorted(renderings)]
        sets = [s for s in sets if len(s)]
        if sets:
            row_reference += [len(reference_problems)] * len(sets)
            reference_problems.append(",".join(problems))
            fingerprints.append(fingerprint)
            shingle_sets += sets
    # Inverted index shingle -> reference rows: sorted unique keys plus CSR-style postings.
    rows = np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(shingle_sets)]) \
        if shingle_sets else np.empty(0, dtype=np.int32)
    keys = np.concatenate(shingle_sets) if shingle_sets else np.empty(0, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    unique_keys, starts = np.unique(keys, return_index=True)
    return (unique_keys, np.append(starts, len(keys)).astype(np.int64), rows,
            np.array([len(s) for s in shingle_sets], dtype=np.float64), np.array(row_reference, dtype=np.int32),
            reference_problems, fingerprints)


def _build_index(benchmarks: Benchmarks, config: DecontaminationConfig) -> _Index:
    names, ngram_keys, ngram_problem, ngram_part = _build_ngram_arrays(benchmarks, config)
    skeleton_keys, starts, rows, sizes, row_reference, ref_problems, fingerprints = _build_ast_arrays(benchmarks, config)
    return _Index(names, ngram_keys, ngram_problem, ngram_part, skeleton_keys, starts, rows, sizes, row_reference,
                  ref_problems, fingerprints)


# -- the index cache: building it costs seconds, and every prepare worker process needs it ---------------

def default_cache_dir() -> Path:
    return Path(os.environ.get("PHI_HPC_CACHE_DIR", Path.home() / ".cache" / "phi-hpc")) / "decontamination"


def _cache_key(benchmarks: Benchmarks, config: DecontaminationConfig) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}|{sys.version_info[:2]}".encode())
    for part in benchmarks.parts:
        digest.update(f"{part.problem}\0{part.part}\0{part.text}\0".encode("utf-8", "surrogatepass"))
    for solution in benchmarks.solutions:
        digest.update(f"{solution.problem}\0{solution.entry_point}\0{solution.source}\0".encode("utf-8", "surrogatepass"))
    fields = {k: v for k, v in dataclasses.asdict(config).items() if not k.startswith("embedding")}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()[:32]


_ARRAYS = ("ngram_keys", "ngram_problem", "ngram_part", "skeleton_keys", "skeleton_starts", "skeleton_rows",
           "reference_sizes", "row_reference")


def _load_cached_index(cache_dir, benchmarks: Benchmarks, config: DecontaminationConfig) -> _Index | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"index-{_cache_key(benchmarks, config)}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None  # absent or damaged: rebuild (and rewrite) it
    return _Index(problem_names=meta["problem_names"], reference_problems=meta["reference_problems"],
                  reference_fingerprints=[tuple(f) for f in meta["reference_fingerprints"]], **arrays)


def _store_cached_index(cache_dir, benchmarks: Benchmarks, config: DecontaminationConfig, index: _Index) -> None:
    if cache_dir is None:
        return
    from phi_hpc.fileio import atomic_write

    meta = {"problem_names": index.problem_names, "reference_problems": index.reference_problems,
            "reference_fingerprints": [list(f) for f in index.reference_fingerprints]}
    try:
        with atomic_write(Path(cache_dir) / f"index-{_cache_key(benchmarks, config)}.npz", "wb", encoding=None) as handle:
            np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                     **{name: getattr(index, name) for name in _ARRAYS})
    except OSError:
        pass  # a read-only home only costs the rebuild next time


class Decontaminator:
    """Built once per process from the benchmark files; :meth:`check` is called on every document."""

    def __init__(self, benchmarks: Benchmarks, config: DecontaminationConfig = DecontaminationConfig(),
                 cache_dir: str | os.PathLike | None = None):
        self.config = config
        self.benchmarks = benchmarks
        index = _load_cached_index(cache_dir, benchmarks, config)
        if index is None:
            index = _build_index(benchmarks, config)
            _store_cached_index(cache_dir, benchmarks, config, index)
        self._index = index
        self._ngrams = HashSet(index.ngram_keys)
        self._skeletons = HashSet(index.skeleton_keys)
        self._ast_references = list(zip(index.reference_problems, index.reference_fingerprints))
        self.ngram_index_size = len(index.ngram_keys)
        self.ast_reference_count = len(index.reference_problems)
        self._embedding_index = None
        if config.embedding_threshold is not None:
            self._build_embedding_index()

    def _build_embedding_index(self) -> None:
        from phi_hpc.quality.classifier import HashedTokenEmbedder

        self._embedder = HashedTokenEmbedder(dim=self.config.embedding_dim, with_statistics=False)
        sources = [s.source for s in self.benchmarks.solutions]
        self._embedding_problems = [s.problem for s in self.benchmarks.solutions]
        self._embedding_index = self._unit_rows(self._embedder.embed(sources))

    @staticmethod
    def _unit_rows(matrix: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)

    # -- per-document checks ------------------------------------------------------------------------
    def _skeleton_shingles(self, hashes: np.ndarray) -> np.ndarray:
        return _shingles(skeleton(hashes), self.config.skeleton_shingle)

    def _ngram_finding(self, hashes: np.ndarray) -> Finding | None:
        if len(self._ngrams) == 0:
            return None
        grams = _shingles(hashes, self.config.ngram)
        hits = np.unique(grams[self._ngrams.contains(grams)])
        if len(hits) == 0:
            return None
        rows = self._ngrams.positions(hits)
        problems = self._index.ngram_problem[rows]
        best = int(np.bincount(problems).argmax())
        chosen = rows[problems == best]
        if len(chosen) < self.config.min_ngram_matches:
            return None
        parts = sorted({PARTS[i] for i in self._index.ngram_part[chosen].tolist()})
        return Finding(self._index.problem_names[best], "ngram", float(len(chosen)),
                       f"{len(chosen)} shared {self.config.ngram}-grams ({'/'.join(parts)})")

    def _containment(self, shingles: np.ndarray) -> np.ndarray:
        """For every reference, how many of its distinct skeleton shingles occur in ``shingles``."""
        index = self._index
        members = np.unique(shingles[self._skeletons.contains(shingles)])
        matched = self._skeletons.positions(members)
        starts, ends = index.skeleton_starts[matched], index.skeleton_starts[matched + 1]
        lengths = ends - starts
        # Gather all posting lists at once: row ids of every reference owning a matched shingle.
        postings = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        return np.bincount(index.skeleton_rows[postings], minlength=len(index.reference_sizes))

    def _candidates(self, shingles: np.ndarray) -> np.ndarray:
        if len(self._skeletons) == 0 or len(shingles) == 0:
            return np.zeros(0, dtype=np.int64)
        counts = self._containment(shingles)
        rows = np.flatnonzero(counts >= self.config.skeleton_containment * self._index.reference_sizes)
        return np.unique(self._index.row_reference[rows])

    def _ast_finding(self, text: str, hashes: np.ndarray) -> Finding | None:
        shingles = self._skeleton_shingles(hashes)
        if len(self._candidates(shingles)) == 0:
            return None
        tree = code_ast.parse_python(text)
        if tree is None:
            return None
        # The document passed as a whole; now each function must pass on its own token span, so that
        # only a handful of functions of a large file are normalized and aligned.
        tokens = SHARED_CACHE.get(text)
        raw = np.frombuffer(tokens.data, dtype=np.uint8)
        line_starts = np.concatenate(([0], np.flatnonzero(raw == 10) + 1))
        token_lines = np.searchsorted(line_starts, tokens.starts, side="right")  # 1-based
        width = self.config.skeleton_shingle
        pairs = []
        for func in code_ast.iter_functions(tree):
            lo = int(np.searchsorted(token_lines, func.lineno, side="left"))
            hi = int(np.searchsorted(token_lines, func.end_lineno or func.lineno, side="right"))
            candidates = self._candidates(shingles[lo:max(lo, hi - width + 1)])
            if len(candidates):
                pairs.append((func, [self._ast_references[i] for i in candidates.tolist()]))
        match = code_ast.best_function_match(pairs, self.config.ast_threshold)
        if match is None:
            return None
        return Finding(match.problem, "ast", match.similarity,
                       f"function {match.function} (line {match.lineno}) has AST similarity "
                       f"{match.similarity:.2f} >= {self.config.ast_threshold}")

    def _embedding_findings(self, texts: Sequence[str]) -> list[Finding | None]:
        vectors = self._unit_rows(self._embedder.embed(list(texts)))
        sims = vectors @ self._embedding_index.T
        best = sims.argmax(axis=1)
        out: list[Finding | None] = []
        for row, col in enumerate(best.tolist()):
            score = float(sims[row, col])
            if score >= self.config.embedding_threshold:
                out.append(Finding(self._embedding_problems[col], "embedding", score,
                                   f"cosine similarity {score:.3f} >= {self.config.embedding_threshold}"))
            else:
                out.append(None)
        return out

    def check(self, text: str) -> Finding | None:
        """The first signal that flags ``text``, or None when it looks clean."""
        hashes = SHARED_CACHE.get(text).hashes
        return self._ngram_finding(hashes) or self._ast_finding(text, hashes)

    def check_many(self, texts: Sequence[str]) -> list[Finding | None]:
        findings = [self.check(text) for text in texts]
        if self._embedding_index is not None:
            for i, extra in enumerate(self._embedding_findings(texts)):
                findings[i] = findings[i] or extra
        return findings


@dataclass
class DecontaminationFilter:
    """The ``prepare`` stage (see :mod:`phi_hpc.data.filters`): flags drop documents unless report-only."""

    decontaminator: Decontaminator
    report_only: bool = False
    name: str = "decontamination"

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        verdicts = []
        for finding in self.decontaminator.check_many(texts):
            if finding is None:
                verdicts.append(Verdict(keep=True))
            else:
                # Report-only keeps the document; the reason still reaches the audit through the verdict.
                verdicts.append(Verdict(keep=self.report_only, reason=finding.reason(), score=finding.score))
        return verdicts


def build_decontaminator(benchmark_data: str | None = None, cache_dir: str | os.PathLike | None = None,
                         **overrides) -> Decontaminator:
    """``cache_dir``: where the derived index is cached (None: always rebuild, e.g. in tests)."""
    return Decontaminator(load_benchmarks(benchmark_data), DecontaminationConfig(**overrides), cache_dir)
