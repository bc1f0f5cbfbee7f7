"""Every decontamination threshold in one frozen dataclass, importable without numpy.

``prepare`` nests it in its own config (``--set decontamination.ast_threshold=0.85``) and
``decontaminate`` exposes it as options, so both run the same checks with the same numbers.

The defaults are measured (``tests/quality/test_mutations.py``, ``benchmarks/quality_eval.py``): on
the mutation suite (HumanEval solutions renamed, docstring dropped, statements added/dropped) recall
is >= 0.95 at AST similarity >= 0.9, and untouched stdlib files are flagged <= 0.5% of the time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecontaminationConfig:
    ngram: int = 13
    min_ngram_matches: int = 1  # shared distinct n-grams with one problem needed to flag
    max_problems_per_ngram: int = 1  # an n-gram shared by more problems is boilerplate, not evidence
    min_ngram_words: int = 3  # distinct names (2+ letters, not keywords/builtins) an indexed n-gram needs
    ast_threshold: float = 0.9  # tau: SequenceMatcher ratio of normalized ASTs
    # Smaller solutions are too generic to compare structurally. Measured on the stdlib (1786 files)
    # and the mutation suite: 20 flags stdlib helpers such as `def predicate(x): return x in y` as
    # MBPP solutions; 25 flags 0.78% of files; 28 flags 0.39% and lifts recall at similarity >= 0.9
    # from 0.93 (at 35) to 0.95.
    ast_min_tokens: int = 28
    skeleton_shingle: int = 8
    # Lexical pre-filter: share of a solution's skeleton shingles a document must contain before it is
    # parsed. None: follows tau (see prefilter_containment), so lowering --ast-threshold loosens it.
    skeleton_containment: float | None = None
    embedding_threshold: float | None = None  # cosine similarity; None disables the embedding check
    embedding_dim: int = 4096  # hashed embedding buckets
    embedding_model: str | None = None  # an LM folder (CodeGen-style): its embedding instead of hashed
    embedding_tokenizer: str | None = None
    embedding_max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.ngram < 3:
            raise ValueError(f"ngram {self.ngram} is too short to mean anything (the paper uses 13)")
        if not 0.0 < self.ast_threshold <= 1.0:
            raise ValueError(f"ast_threshold {self.ast_threshold} must be in (0, 1]")
        if self.skeleton_containment is not None and not 0.0 <= self.skeleton_containment <= 1.0:
            raise ValueError(f"skeleton_containment {self.skeleton_containment} must be in [0, 1]")
        if self.embedding_threshold is not None and not -1.0 <= self.embedding_threshold <= 1.0:
            raise ValueError(f"embedding_threshold {self.embedding_threshold} must be a cosine in [-1, 1]")

    @property
    def prefilter_containment(self) -> float:
        """The pre-filter's containment for this tau: 0.3 at tau 0.9, 0.1 at 0.8, 0.4 at 0.95.

        A mutant at AST similarity s keeps fewer of the reference's 8-token skeleton shingles the lower
        s is; on the mutation suite, containment 0.3 passes >= 96% of mutants above 0.9 and 0.1 passes
        >= 94% of those in [0.8, 0.85). The old fixed 0.75 dropped a third of those above 0.9.
        """
        if self.skeleton_containment is not None:
            return self.skeleton_containment
        return max(0.05, min(0.75, 0.3 + 2.0 * (self.ast_threshold - 0.9)))
