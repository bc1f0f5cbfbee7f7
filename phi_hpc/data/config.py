"""``PrepareConfig``: every knob of ``phi-hpc prepare`` in one typed, frozen tree.

Command-line arguments (inputs, ``--tokenizer``, ``-o``, ``--workers``...) fill the same fields, so a
YAML file can hold a whole recipe and the CLI only says where this run's data lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phi_hpc.data.fast_bpe import check_backend
from phi_hpc.quality.decontamination_config import DecontaminationConfig


@dataclass(frozen=True)
class DedupConfig:
    """Exact and MinHash-LSH near-duplicate removal (defaults: BigCode's near-dedup of The Stack)."""

    exact: bool = True
    near: bool = True
    ngram: int = 5  # words per shingle
    num_perm: int = 256
    threshold: float = 0.85  # Jaccard similarity at which two documents count as duplicates
    bands: int | None = None  # LSH bands x rows must be <= num_perm; None: chosen from the threshold
    rows: int | None = None
    seed: int = 42  # seeds the permutations: signatures from different seeds are not comparable
    # Confirm each LSH candidate pair by its full signature estimate (>= threshold) before merging,
    # so a chance band collision between two merely similar files cannot chain clusters together.
    verify_candidates: bool = True
    # Who permutes the shingle hashes: "rensa" (the default: rensa 0.5.0, a maintained Rust MinHash,
    # a dependency pinned in setup.py; 2.5x faster than numpy here) or "numpy" (built in, selectable).
    # Equally accurate, but different signatures, so a different dedup decision on borderline pairs.
    minhash: str = "rensa"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if self.ngram < 1 or self.num_perm < 1:
            raise ValueError("ngram and num_perm must be >= 1")
        if self.minhash not in ("numpy", "rensa"):
            raise ValueError(f"minhash must be numpy or rensa, not {self.minhash!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(
                f"bands x rows = {self.bands} x {self.rows} must be >= 1 and <= num_perm ({self.num_perm})"
            )


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation split by whole documents (a document never straddles both)."""

    validation_fraction: float = 0.01
    seed: int = 1234
    shuffle: bool = True  # permute documents (seeded) so that a training stream mixes sources

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")


@dataclass(frozen=True)
class PrepareConfig:
    inputs: list[str] = field(default_factory=list)
    tokenizer: str = ""
    output_dir: str = ""
    workers: int = 0  # map processes; 0 = one per available core
    strict: bool = False
    max_documents: int | None = None  # keep only the first N good documents (demos, tests)
    glob: str = "**/*.py"  # which files of an input directory are documents
    text_key: str = "text"  # field of .jsonl records / column of .parquet files holding the text
    shard_mb: float = 8.0  # map-stage work unit for folders of files (input MB per shard; each data file is one)
    eos_token: str = "<|endoftext|>"
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    quality_model: str | None = None
    quality_scores: str | None = None  # a `quality score` folder: filter on stored scores, no embedding
    quality_threshold: float = 0.5
    decontaminate: bool = False
    decontaminate_report_only: bool = False
    benchmark_data: str | None = None
    # every threshold of the checks: --set decontamination.ast_threshold=0.85 (see decontaminate --help)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    keep_work: bool = False  # keep OUT/.work (per-shard tokens and signatures) after success
    # Who computes the token ids: "auto" (tiktoken where it reproduces the tokenizer's ids, a
    # byte-level BPE such as phi-1's; else tokenizers), "tiktoken" (insist) or "tokenizers".
    # The ids are the same either way, so this is not part of the run's identity.
    tokenizer_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be >= 0 (0: one per available core)")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError("max_documents must be >= 1")
        if self.shard_mb <= 0:
            raise ValueError("shard_mb must be > 0")
        check_backend(self.tokenizer_backend)
