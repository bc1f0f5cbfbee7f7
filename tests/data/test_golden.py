"""Outputs pinned to sha256 digests: MinHash signatures, LSH band keys and ``prepare``'s written files
on a fixed, generated corpus. Any rewrite of shingling, hashing, dedup or I/O must reproduce these
bytes; a change of the signature or LSH scheme must change these digests on purpose, and say so.

Recorded first from the implementation before issue 14's speedups (commit 6cfb3ac). Changed once,
on purpose, by issue 14 (2026-11-30), both announced in docs/benchmarks.md:
- LSH default banding 13 x 19 -> 32 x 8 (``dedup.recall_first_bands``: a pair at the 0.85
  threshold becomes a candidate with probability 0.99996 instead of 0.45). Band keys
  27c7b8fa... -> fab0b1e8... (numpy signatures), and rensa's keys are a904... .
- ``prepare``'s default MinHash backend numpy -> rensa 0.5.0 (a pinned dependency; 2.5x faster).
  Signatures aee2a652... (numpy, unchanged and still pinned) -> 6ee2516b... (rensa).
- Candidate verification from 2 standard deviations below the threshold (estimated J >= 0.805
  for 0.85/256, ``dedup.verification_floor``) instead of >= 0.85. No digest here moved with it.
On this corpus the default run's train/validation files are byte-identical to the old numpy
default's (a3a212c5..., 93d11eb6...: the same 5 near duplicates are removed; with the old banding
rensa missed one of them); only audit.jsonl changes (8d2fdedb... -> 740c738c...), because it records
rensa's similarity estimates.

The corpus is generated from a seeded RNG (not read from the installed standard library), so the
digests do not depend on the Python version; only the tokenizer file is shared data.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from phi_hpc.data import pipeline
from phi_hpc.data.config import DedupConfig, PrepareConfig
from phi_hpc.data.dedup import band_keys, resolve_bands
from phi_hpc.data.minhash import MinHasher
from phi_hpc.fileio import sha256_file

# rensa 0.5.0 (algorithm version 2), prepare's default: its own permutations of the same shingles.
RENSA_SIGNATURES = "6ee2516b67c7b3ffb348d79ad8d311bf2a0f761d99b7940b9f321bbcdd280915"
RENSA_BAND_KEYS = "a904737349e4511bd643e92bbde6f1c40eea90de0870f3a1f4610a08bd56be16"  # 32 x 8
# numpy (built in, dedup.minhash=numpy): signatures unchanged since 6cfb3ac.
NUMPY_SIGNATURES = "aee2a652f22aba79ed6690776b9cc81fde9e16dcbb4402eae7b958939d31a4e0"
NUMPY_BAND_KEYS = "fab0b1e8cad8dcac77e8d7c0a24743149556b6860d3ac6faa99626765195849b"  # 32 x 8 (13 x 19: 27c7b8fa...)
_TOKENS = {
    "train.bin": "a3a212c5bcdb1db20ba39052eca5eda3bd07ee4189ef0c15594fdd646a1693e1",
    "train.idx": "93d11eb65af73c477e358203d9010ed9afbd2c1973b5e2c831ca2427b8950276",
    "validation.bin": "9889ff2829f6d13843b363aab6a0d531853387b78693384795bc7ca8aa0487e7",
    "validation.idx": "453e4eb09b5e36ee6e9bc9ff80963ba59e8d096528c12bb20238395e98efd886",
}
EXPECTED_FILES = {  # the default (rensa); audit.jsonl was 8d2fdedb... with numpy and 13 x 19
    **_TOKENS,
    "audit.jsonl": "740c738cbe77eb8eb3f2535864d993d0a51608e20a01698285ea019f1a3f3dc6",
}
NUMPY_FILES = {**_TOKENS, "audit.jsonl": "8d2fdedb04cfc764c77d2443909f6b762329302ad5b8ce06df00bce661bb15ce"}
EXPECTED_COUNTS = {
    "bad": 0,
    "bytes_in": 216514,
    "bytes_out": 184041,
    "documents_in": 300,
    "documents_out": 264,
    "exact_duplicates": 31,
    "filtered": {},
    "flagged": {},
    "near_duplicates": 5,
    "tokens": 71645,
}

_WORDS = [
    "def",
    "return",
    "self",
    "value",
    "x",
    "y",
    "items",
    "for",
    "in",
    "if",
    "else",
    "import",
    "class",
    "None",
    "True",
    "result",
    "count",
    "name",
    "data",
    "_private",
    "é",
    "naïve",
    "π",
    "数据",
    "1",
    "42",
    "0x1F",
    "lambda",
    "yield",
    "async",
    "await",
    "with",
    "open",
    "path",
]
_PUNCT = [" ", " ", " ", "(", ")", ", ", ".", ": ", "\n    ", "\n", " = ", "[", "]", " + ", "  ", "\t", "#"]


def _document(rng: random.Random, words: int) -> str:
    return "".join(rng.choice(_WORDS) + rng.choice(_PUNCT) for _ in range(words)) + "\n"


def golden_texts() -> list[str]:
    """~300 documents: distinct ones of many lengths (including shorter than a shingle, and over the
    8-byte word-hash step), exact copies and near copies with a few words edited."""
    rng = random.Random(20261130)
    texts: list[str] = []
    for i in range(240):
        length = rng.choice([1, 2, 3, 4, 5, 6, 20, 80, 300, 1200])
        texts.append(_document(rng, length) + f"tag_{i}_{'long_identifier_name' * (i % 3)}\n")
    for i in range(0, 240, 8):
        texts.append(texts[i])  # exact copy
        words = texts[i + 1].split(" ")
        for j in rng.sample(range(len(words)), max(1, len(words) // 60)):
            words[j] = "edited"
        texts.append(" ".join(words))  # near copy (or a different short document)
    return texts


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize(
    "backend,signatures_sha,keys_sha",
    [("rensa", RENSA_SIGNATURES, RENSA_BAND_KEYS), ("numpy", NUMPY_SIGNATURES, NUMPY_BAND_KEYS)],
)
def test_minhash_signatures_and_band_keys_match_the_recorded_digests(backend, signatures_sha, keys_sha):
    signatures = MinHasher(backend=backend).signatures(golden_texts())
    assert signatures.shape == (300, 256) and signatures.dtype == np.uint32
    bands, rows = resolve_bands(0.85, 256, None, None)
    assert (bands, rows) == (32, 8)
    assert _sha(signatures) == signatures_sha
    assert _sha(band_keys(signatures, bands, rows)) == keys_sha


def test_prepare_defaults_to_rensa():
    assert DedupConfig().minhash == "rensa"


@pytest.mark.parametrize(
    "workers,minhash,encoder",
    [(1, None, "auto"), (2, None, "auto"), (1, "numpy", "auto"), (2, "numpy", "auto"), (2, None, "tokenizers")],
)
def test_prepare_outputs_match_the_recorded_digests(tmp_path, codegen_tokenizer, workers, minhash, encoder):
    """auto: tiktoken computes the ids (phi_hpc.data.fast_bpe); the digests were recorded with tokenizers."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i, text in enumerate(golden_texts()):
        (root / f"doc_{i:04d}.py").write_text(text, encoding="utf-8")
    dedup = DedupConfig() if minhash is None else DedupConfig(minhash=minhash)  # None: the default (rensa)
    config = PrepareConfig(
        inputs=[str(root)],
        tokenizer=str(codegen_tokenizer),
        output_dir=str(tmp_path / "out"),
        workers=workers,
        shard_mb=0.05,
        dedup=dedup,
        tokenizer_backend=encoder,
    )
    manifest = pipeline.prepare(config, show_progress=False)
    out = Path(config.output_dir)
    digests = {name: sha256_file(out / name) for name in ("train.bin", "train.idx", "validation.bin", "validation.idx")}
    audit = (out / "audit.jsonl").read_text().replace(str(root) + "/", "")
    digests["audit.jsonl"] = hashlib.sha256(audit.encode()).hexdigest()
    assert manifest["counts"] == EXPECTED_COUNTS
    assert digests == (EXPECTED_FILES if minhash is None else NUMPY_FILES)
