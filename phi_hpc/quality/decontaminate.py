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
3. Optionally, **embedding distance**: cosine similarity between the document and each solution, of
   hashed-token vectors (the classifier's CPU embedder) or of an LM's mean-pooled hidden states
   (``embedding_model``: the paper's CodeGen embedding), for paraphrases that change structure.

The pre-filter of check 2 follows tau (``DecontaminationConfig.prefilter_containment``): a sweep to
tau 0.8 also loosens it, instead of a fixed 0.75 dropping near-copies before they are compared.

Tokens and their hashes come from :mod:`phi_hpc.quality.tokens` (numpy over the bytes, no Python
per token), shared with the quality classifier when both stages see the same batch; the lexical views are in
:mod:`phi_hpc.quality.lexical`, the benchmark index and its on-disk cache in
:mod:`phi_hpc.quality.contamination_index`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phi_hpc.data.filters import Verdict
from phi_hpc.quality import code_ast, lexical
from phi_hpc.quality.benchmarks import Benchmarks, load_benchmarks
from phi_hpc.quality.contamination_index import (
    PARTS,
    DecontaminationConfig,
    build_index,
    default_cache_dir,
    load_cached_index,
    store_cached_index,
)
from phi_hpc.quality.tokens import SHARED_CACHE, HashSet

__all__ = [
    "DecontaminationConfig",
    "Decontaminator",
    "DecontaminationFilter",
    "Finding",
    "build_decontaminator",
    "default_cache_dir",
]


@dataclass(frozen=True)
class Finding:
    """Why one document was flagged: the first signal that fired, and the problem it points at."""

    problem: str  # "HumanEval/12"; comma-separated when several problems share one solution's structure
    method: str  # "ngram" | "ast" | "embedding"
    score: float
    detail: str

    def reason(self) -> str:
        return f"{self.method} match with {self.problem}: {self.detail}"


class Decontaminator:
    """Built once per process from the benchmark files; :meth:`check` is called on every document."""

    def __init__(
        self,
        benchmarks: Benchmarks,
        config: DecontaminationConfig = DecontaminationConfig(),
        cache_dir: str | os.PathLike | None = None,
    ):
        self.config = config
        self.benchmarks = benchmarks
        index = load_cached_index(cache_dir, benchmarks, config)
        if index is None:
            index = build_index(benchmarks, config)
            store_cached_index(cache_dir, benchmarks, config, index)
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
        """Embeddings of every solution: hashed tokens, or an LM's (the paper used CodeGen's), loaded
        once per process and shared with the quality scorer when both use the same folder."""
        config = self.config
        if config.embedding_model:
            from phi_hpc.quality.lm_embedder import RuntimeOptions, cached_lm_embedder

            self._embedder = cached_lm_embedder(
                config.embedding_model, config.embedding_tokenizer, config.embedding_max_tokens, RuntimeOptions()
            )
        else:
            from phi_hpc.quality.embedders import HashedTokenEmbedder

            self._embedder = HashedTokenEmbedder(dim=config.embedding_dim, with_statistics=False)
        sources = [s.source for s in self.benchmarks.solutions]
        self._embedding_problems = [s.problem for s in self.benchmarks.solutions]
        self._embedding_index = self._unit_rows(self._embedder.embed(sources))

    @staticmethod
    def _unit_rows(matrix: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12)

    @property
    def has_embedding(self) -> bool:
        return self._embedding_index is not None

    # -- per-document checks ------------------------------------------------------------------------
    def _skeleton_shingles(self, hashes: np.ndarray) -> np.ndarray:
        return lexical.shingles(lexical.skeleton(hashes), self.config.skeleton_shingle)

    def ngram_finding(self, tokens) -> Finding | None:
        if len(self._ngrams) == 0:
            return None
        grams = lexical.shingles(tokens.hashes, self.config.ngram)
        member = self._ngrams.contains(grams)
        hits = np.unique(grams[member])
        if len(hits) == 0:
            return None
        rows = self._ngrams.positions(hits)
        problems = self._index.ngram_problem[rows]
        best = int(np.bincount(problems).argmax())
        chosen = rows[problems == best]
        if len(chosen) < self.config.min_ngram_matches:
            return None
        parts = sorted({PARTS[i] for i in self._index.ngram_part[chosen].tolist()})
        # Where the overlap starts, so a person can look: the first window holding one of those n-grams.
        first = int(np.flatnonzero(member & np.isin(grams, self._index.ngram_keys[chosen]))[0])
        line = tokens.data.count(b"\n", 0, int(tokens.starts[first])) + 1
        return Finding(
            self._index.problem_names[best],
            "ngram",
            float(len(chosen)),
            f"{len(chosen)} shared {self.config.ngram}-grams ({'/'.join(parts)}), from line {line}",
        )

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
        rows = np.flatnonzero(counts >= self.config.prefilter_containment * self._index.reference_sizes)
        return np.unique(self._index.row_reference[rows])

    def ast_finding(self, text: str, hashes: np.ndarray) -> Finding | None:
        shingles = self._skeleton_shingles(hashes)
        if len(self._candidates(shingles)) == 0:
            return None
        trees = code_ast.parse_code_in(text)
        if not trees:
            return None
        # The document passed as a whole; now each function must pass on its own token span, so that
        # only a handful of functions of a large file are normalized and aligned.
        tokens = SHARED_CACHE.get(text)
        raw = np.frombuffer(tokens.data, dtype=np.uint8)
        line_starts = np.concatenate(([0], np.flatnonzero(raw == 10) + 1))
        token_lines = np.searchsorted(line_starts, tokens.starts, side="right")  # 1-based
        width = self.config.skeleton_shingle
        pairs = []
        for func in (f for tree in trees for f in code_ast.iter_functions(tree)):
            lo = int(np.searchsorted(token_lines, func.lineno, side="left"))
            hi = int(np.searchsorted(token_lines, func.end_lineno or func.lineno, side="right"))
            candidates = self._candidates(shingles[lo : max(lo, hi - width + 1)])
            if len(candidates):
                pairs.append((func, [self._ast_references[i] for i in candidates.tolist()]))
        match = code_ast.best_function_match(pairs, self.config.ast_threshold)
        if match is None:
            return None
        return Finding(
            match.problem,
            "ast",
            match.similarity,
            f"function {match.function} (line {match.lineno}) has AST similarity "
            f"{match.similarity:.2f} >= {self.config.ast_threshold}",
        )

    def embedding_findings(self, texts: Sequence[str]) -> list[Finding | None]:
        vectors = self._unit_rows(self._embedder.embed(list(texts)))
        sims = vectors @ self._embedding_index.T
        best = sims.argmax(axis=1)
        out: list[Finding | None] = []
        for row, col in enumerate(best.tolist()):
            score = float(sims[row, col])
            if score >= self.config.embedding_threshold:
                out.append(
                    Finding(
                        self._embedding_problems[col],
                        "embedding",
                        score,
                        f"cosine similarity {score:.3f} >= {self.config.embedding_threshold}",
                    )
                )
            else:
                out.append(None)
        return out

    def check(self, text: str) -> Finding | None:
        """The first signal that flags ``text``, or None when it looks clean."""
        tokens = SHARED_CACHE.get(text)
        return self.ngram_finding(tokens) or self.ast_finding(text, tokens.hashes)

    def check_many(self, texts: Sequence[str]) -> list[Finding | None]:
        findings = [self.check(text) for text in texts]
        if self._embedding_index is not None:
            for i, extra in enumerate(self.embedding_findings(texts)):
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


def build_decontaminator(
    benchmark_data: str | None = None, cache_dir: str | os.PathLike | None = None, **overrides
) -> Decontaminator:
    """``cache_dir``: where the derived index is cached (None: always rebuild, e.g. in tests)."""
    return Decontaminator(load_benchmarks(benchmark_data), DecontaminationConfig(**overrides), cache_dir)
