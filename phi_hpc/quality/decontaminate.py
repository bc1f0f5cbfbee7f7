"""Keep HumanEval and MBPP out of the training data (phi-1 paper, section 5).

Three signals, cheapest first, each run on every document:

1. **13-gram overlap** with any benchmark prompt, solution or test. Text is lower-cased and split into
   words and punctuation, so whitespace and formatting never matter. N-grams that occur in several
   problems (``def check(candidate):`` boilerplate) are not evidence of anything and are left out.
2. **Rename-invariant AST similarity** with the benchmark solutions (:mod:`phi_hpc.quality.code_ast`).
   Parsing is the expensive part, so a lexical pre-filter decides which documents get parsed: the
   document's token stream with identifiers and literals collapsed to one symbol ("skeleton") must
   contain most of some solution's skeleton shingles. Renaming and reformatting keep the skeleton,
   so the pre-filter loses nothing the AST stage would have found.
3. Optionally, **embedding distance**: cosine similarity of hashed-token vectors (the classifier's
   CPU embedder) between the document and each solution, for paraphrases that change structure.

Tokens are hashed with Python's ``hash`` (fast, C-level); the benchmark index and the documents are
hashed in the same process, so the per-process hash seed never changes a verdict.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from phi_hpc.data.filters import Verdict
from phi_hpc.quality import code_ast
from phi_hpc.quality.benchmarks import Benchmarks, load_benchmarks

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_IDENTIFIER_SYMBOL = "\x00id"


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


def _token_hashes(text: str) -> np.ndarray:
    tokens = TOKEN_RE.findall(text.lower())
    return np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)).view(np.uint64)


_COMMON_WORDS = frozenset(w.lower() for w in keyword.kwlist + keyword.softkwlist + ["self", "cls"]) \
    | frozenset(b.lower() for b in code_ast.BUILTIN_NAMES)


_QUOTES = frozenset({"'", '"'})


def _is_distinctive(name: str) -> bool:
    """Compound names like ``square_perimeter`` are rare outside the problem that coined them."""
    return len(name) >= 8 and "_" in name.strip("_") and not name.startswith("__")


def _informative_windows(text: str, n: int, min_words: int) -> np.ndarray:
    """Mask over the n-gram windows of ``text``: True where the window is evidence of copying.

    Windows made of numbers, punctuation, one-letter names and keywords (``[1, 2, 3, 4, 5, ...]``,
    ``('a', 'b', 'c')``, ``{'one': 1, 'two': 2, ...}``) occur in benchmark tests and in ordinary
    code alike, so they prove nothing; quoted words do not count as names. A window counts when it
    names ``min_words`` distinct things, or one distinctive compound name (MBPP's asserts,
    ``assert square_perimeter(10)==40``, name nothing else).
    """
    tokens = TOKEN_RE.findall(text.lower())
    names = [t if len(t) > 1 and t[0].isalpha() and t not in _COMMON_WORDS and prev not in _QUOTES else None
             for prev, t in zip([""] + tokens, tokens)]
    distinctive = np.array([bool(t) and _is_distinctive(t) for t in names], dtype=np.int64)
    windows = max(len(tokens) - n + 1, 0)
    if windows == 0:
        return np.zeros(0, dtype=bool)
    cumulative = np.concatenate([[0], np.cumsum(distinctive)])
    has_distinctive = (cumulative[n:n + windows] - cumulative[:windows]) > 0
    many_names = np.array([len(set(names[i:i + n]) - {None}) >= min_words for i in range(windows)], dtype=bool)
    return has_distinctive | many_names


def _shingles(hashes: np.ndarray, n: int) -> np.ndarray:
    """Order-sensitive hashes of every window of ``n`` consecutive tokens (uint64, wrapping)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        out = hashes[:count].copy()
        for offset in range(1, n):
            out *= _MULTIPLIER
            out += hashes[offset:offset + count]
    return out


def _hash_array(tokens) -> np.ndarray:
    return np.unique(np.fromiter((hash(t) for t in tokens), dtype=np.int64).view(np.uint64))


# The skeleton keeps keywords, builtins and punctuation and turns every other word or number into
# one symbol. A one-token string literal ('(' or 'a') becomes that symbol too, so literal contents
# do not leak into it.
_QUOTE_HASHES = _hash_array({"'", '"'})
_SKELETON_KEPT = _hash_array({w.lower() for w in keyword.kwlist + keyword.softkwlist}
                             | {b.lower() for b in code_ast.BUILTIN_NAMES}
                             | set("!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"))


class Decontaminator:
    """Built once per process from the benchmark files; :meth:`check` is called on every document."""

    def __init__(self, benchmarks: Benchmarks, config: DecontaminationConfig = DecontaminationConfig()):
        self.config = config
        self.benchmarks = benchmarks
        self._build_ngram_index()
        self._build_ast_index()
        self._embedding_index = None
        if config.embedding_threshold is not None:
            self._build_embedding_index()

    # -- index construction -------------------------------------------------------------------------
    def _build_ngram_index(self) -> None:
        owners: dict[int, set[str]] = {}
        first_part: dict[int, str] = {}
        n = self.config.ngram
        for part in self.benchmarks.parts:
            grams = _shingles(_token_hashes(part.text), n)
            grams = grams[_informative_windows(part.text, n, self.config.min_ngram_words)]
            for gram in np.unique(grams).tolist():
                owners.setdefault(gram, set()).add(part.problem)
                first_part.setdefault(gram, part.part)
        keep = {g: next(iter(p)) for g, p in owners.items() if len(p) <= self.config.max_problems_per_ngram}
        self._ngram_keys = np.array(sorted(keep), dtype=np.uint64)
        self._ngram_problem = keep
        self._ngram_part = first_part
        self.ngram_index_size = len(keep)

    def _build_ast_index(self) -> None:
        self._identifier = np.uint64(hash(_IDENTIFIER_SYMBOL) & 0xFFFFFFFFFFFFFFFF)
        # Problems whose solutions normalize to the same tree (HumanEval/56 and /61 differ only in
        # the bracket characters) share one reference, named after all of them.
        owners: dict[tuple[str, ...], list[str]] = {}
        sources: dict[tuple[str, ...], str] = {}
        for solution in self.benchmarks.solutions:
            tree = code_ast.parse_python(solution.source)
            if tree is None:
                continue
            for func in code_ast.iter_functions(tree):
                if solution.entry_point and func.name != solution.entry_point:
                    continue
                fingerprint = code_ast.function_fingerprint(func)
                if len(fingerprint) < self.config.ast_min_tokens:
                    continue
                problems = owners.setdefault(fingerprint, [])
                if solution.problem not in problems:
                    problems.append(solution.problem)
                sources.setdefault(fingerprint, code_ast.ast.unparse(func))
        references: list[tuple[str, tuple[str, ...]]] = []
        shingle_sets: list[np.ndarray] = []
        for fingerprint, problems in owners.items():
            shingles = np.unique(self._skeleton_shingles(code_ast.strip_for_comparison(sources[fingerprint]) or ""))
            if len(shingles):
                references.append((",".join(problems), fingerprint))
                shingle_sets.append(shingles)
        self._ast_references = references
        # Inverted index shingle -> reference rows, as a sorted key array plus CSR-style postings.
        rows = np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(shingle_sets)]) \
            if shingle_sets else np.empty(0, dtype=np.int32)
        keys = np.concatenate(shingle_sets) if shingle_sets else np.empty(0, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        self._skeleton_keys, starts = np.unique(keys, return_index=True)
        self._skeleton_starts = np.append(starts, len(keys)).astype(np.int64)
        self._skeleton_rows = rows
        self._reference_sizes = np.array([len(s) for s in shingle_sets], dtype=np.float64)
        self.ast_reference_count = len(references)

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
    def _skeleton_shingles(self, text: str, hashes: np.ndarray | None = None) -> np.ndarray:
        if hashes is None:
            hashes = _token_hashes(text)
        skeleton = np.where(np.isin(hashes, _SKELETON_KEPT), hashes, self._identifier)
        if len(skeleton) > 2:
            quoted = np.isin(skeleton[:-2], _QUOTE_HASHES) & (skeleton[:-2] == skeleton[2:])
            skeleton[1:-1][quoted] = self._identifier
        return _shingles(skeleton, self.config.skeleton_shingle)

    def _ngram_finding(self, hashes: np.ndarray) -> Finding | None:
        if len(self._ngram_keys) == 0:
            return None
        grams = _shingles(hashes, self.config.ngram)
        if len(grams) == 0:
            return None
        pos = np.searchsorted(self._ngram_keys, grams)
        pos[pos == len(self._ngram_keys)] = 0
        hits = np.unique(grams[self._ngram_keys[pos] == grams])
        if len(hits) == 0:
            return None
        counts: dict[str, list[int]] = {}
        for gram in hits.tolist():
            counts.setdefault(self._ngram_problem[gram], []).append(gram)
        problem, grams_hit = max(counts.items(), key=lambda item: len(item[1]))
        if len(grams_hit) < self.config.min_ngram_matches:
            return None
        parts = sorted({self._ngram_part[g] for g in grams_hit})
        return Finding(problem, "ngram", float(len(grams_hit)),
                       f"{len(grams_hit)} shared {self.config.ngram}-grams ({'/'.join(parts)})")

    def _ast_candidates(self, hashes: np.ndarray) -> list[int]:
        if len(self._skeleton_keys) == 0:
            return []
        shingles = np.unique(self._skeleton_shingles("", hashes))
        pos = np.searchsorted(self._skeleton_keys, shingles)
        pos[pos == len(self._skeleton_keys)] = 0
        matched = pos[self._skeleton_keys[pos] == shingles]
        if len(matched) == 0:
            return []
        starts, ends = self._skeleton_starts[matched], self._skeleton_starts[matched + 1]
        lengths = ends - starts
        # Gather all posting lists at once: row ids of every reference owning a matched shingle.
        index = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        counts = np.bincount(self._skeleton_rows[index], minlength=len(self._reference_sizes))
        return np.flatnonzero(counts >= self.config.skeleton_containment * self._reference_sizes).tolist()

    def _ast_finding(self, text: str, hashes: np.ndarray) -> Finding | None:
        candidates = self._ast_candidates(hashes)
        if not candidates:
            return None
        tree = code_ast.parse_python(text)
        if tree is None:
            return None
        match = code_ast.best_function_match(tree, [self._ast_references[i] for i in candidates],
                                             self.config.ast_threshold)
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
        hashes = _token_hashes(text)
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
    flagged: list[tuple[int, Finding]] = field(default_factory=list)

    def evaluate(self, texts: Sequence[str]) -> list[Verdict]:
        verdicts = []
        for finding in self.decontaminator.check_many(texts):
            if finding is None:
                verdicts.append(Verdict(keep=True))
            else:
                # Report-only keeps the document; the reason still reaches the audit through the verdict.
                verdicts.append(Verdict(keep=self.report_only, reason=finding.reason(), score=finding.score))
        return verdicts


def build_decontaminator(benchmark_data: str | None = None, **overrides) -> Decontaminator:
    return Decontaminator(load_benchmarks(benchmark_data), DecontaminationConfig(**overrides))
