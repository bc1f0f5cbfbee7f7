"""Outputs pinned to sha256 digests recorded from the implementation before issue 14's speedups
(commit 6cfb3ac): MinHash signatures, LSH band keys and ``prepare``'s written files on a fixed,
generated corpus. Any rewrite of shingling, hashing, dedup or I/O must reproduce these bytes; a
change of the signature scheme would have to change these digests on purpose, and say so.

The corpus is generated from a seeded RNG (not read from the installed standard library), so the
digests do not depend on the Python version; only the tokenizer file is shared data.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from phi_hpc.data import pipeline
from phi_hpc.data.config import DedupConfig, PrepareConfig
from phi_hpc.data.dedup import band_keys, resolve_bands
from phi_hpc.data.minhash import MinHasher
from phi_hpc.fileio import sha256_file

EXPECTED_SIGNATURES = "aee2a652f22aba79ed6690776b9cc81fde9e16dcbb4402eae7b958939d31a4e0"
EXPECTED_BAND_KEYS = "27c7b8fa01b2991d40c9953348048c4d5d0dcfbd29e28a52a2fe1ab3f4b4da36"
EXPECTED_FILES = {
    "train.bin": "a3a212c5bcdb1db20ba39052eca5eda3bd07ee4189ef0c15594fdd646a1693e1",
    "train.idx": "93d11eb65af73c477e358203d9010ed9afbd2c1973b5e2c831ca2427b8950276",
    "validation.bin": "9889ff2829f6d13843b363aab6a0d531853387b78693384795bc7ca8aa0487e7",
    "validation.idx": "453e4eb09b5e36ee6e9bc9ff80963ba59e8d096528c12bb20238395e98efd886",
    "audit.jsonl": "8d2fdedb04cfc764c77d2443909f6b762329302ad5b8ce06df00bce661bb15ce",
}
# rensa 0.5.0 (algorithm version 2), dedup.minhash=rensa: its own permutations, so other signatures
# and, on this corpus, one borderline near duplicate fewer; the same pipeline otherwise.
RENSA_SIGNATURES = "6ee2516b67c7b3ffb348d79ad8d311bf2a0f761d99b7940b9f321bbcdd280915"
RENSA_FILES = {
    "train.bin": "2a28177928948f9bd2b4ec24e88c93da7f6ae29deed096165dcd44664bfe95f1",
    "train.idx": "31241bcd276913d2966465735aed89dee2ad42aa6668a25ced27150d2bc2c5b0",
    "validation.bin": "9889ff2829f6d13843b363aab6a0d531853387b78693384795bc7ca8aa0487e7",
    "validation.idx": "453e4eb09b5e36ee6e9bc9ff80963ba59e8d096528c12bb20238395e98efd886",
    "audit.jsonl": "a7d008ff9cc281e13e6fb72e0ac2a587ef73a5c9e4a86ab92940a8ac03736887",
}
RENSA_COUNTS = {"bad": 0, "bytes_in": 216514, "bytes_out": 184537, "documents_in": 300, "documents_out": 265,
                "exact_duplicates": 31, "filtered": {}, "flagged": {}, "near_duplicates": 4, "tokens": 71856}
EXPECTED_COUNTS = {"bad": 0, "bytes_in": 216514, "bytes_out": 184041, "documents_in": 300, "documents_out": 264,
                   "exact_duplicates": 31, "filtered": {}, "flagged": {}, "near_duplicates": 5, "tokens": 71645}

_WORDS = ["def", "return", "self", "value", "x", "y", "items", "for", "in", "if", "else", "import", "class",
          "None", "True", "result", "count", "name", "data", "_private", "é", "naïve", "π", "数据", "1", "42",
          "0x1F", "lambda", "yield", "async", "await", "with", "open", "path"]
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


def test_minhash_signatures_and_band_keys_match_the_recorded_digests():
    hasher = MinHasher()
    signatures = hasher.signatures(golden_texts())
    assert signatures.shape == (300, 256) and signatures.dtype == np.uint32
    bands, rows = resolve_bands(0.85, 256, None, None)
    assert _sha(signatures) == EXPECTED_SIGNATURES
    assert _sha(band_keys(signatures, bands, rows)) == EXPECTED_BAND_KEYS


def test_rensa_signatures_match_the_recorded_digest():
    pytest.importorskip("rensa")
    signatures = MinHasher(backend="rensa").signatures(golden_texts())
    assert signatures.shape == (300, 256) and signatures.dtype == np.uint32
    assert _sha(signatures) == RENSA_SIGNATURES


@pytest.mark.parametrize("workers,minhash", [(1, "numpy"), (2, "numpy"), (1, "rensa"), (2, "rensa")])
def test_prepare_outputs_match_the_recorded_digests(tmp_path, codegen_tokenizer, workers, minhash):
    if minhash == "rensa":
        pytest.importorskip("rensa")
    root = tmp_path / "corpus"
    root.mkdir()
    for i, text in enumerate(golden_texts()):
        (root / f"doc_{i:04d}.py").write_text(text, encoding="utf-8")
    config = PrepareConfig(inputs=[str(root)], tokenizer=str(codegen_tokenizer), output_dir=str(tmp_path / "out"),
                           workers=workers, shard_mb=0.05, dedup=DedupConfig(minhash=minhash))
    manifest = pipeline.prepare(config, show_progress=False)
    out = Path(config.output_dir)
    digests = {name: sha256_file(out / name) for name in ("train.bin", "train.idx", "validation.bin", "validation.idx")}
    audit = (out / "audit.jsonl").read_text().replace(str(root) + "/", "")
    digests["audit.jsonl"] = hashlib.sha256(audit.encode()).hexdigest()
    assert manifest["counts"] == (EXPECTED_COUNTS if minhash == "numpy" else RENSA_COUNTS)
    assert digests == (EXPECTED_FILES if minhash == "numpy" else RENSA_FILES)
