"""Loading the user's tokenizer and turning document batches into token arrays.

A tokenizer is given as a ``tokenizer.json`` file, a local Hugging Face tokenizer folder (with a
``tokenizer.json``, or the older ``vocab.json`` + ``merges.txt`` pair of a byte-level BPE) or a hub id
(``microsoft/phi-1``), resolved by :mod:`phi_hpc.fetch` through huggingface_hub's cache. ``submit``
resolves it on the login node, so jobs on compute nodes (usually offline) get a local path.

Normalized text: *none*. We keep the document's text exactly as read, and the contract is a lossless
round trip — ``decode(tokens without the trailing EOS) == text``. Byte-level BPE (GPT-2, CodeGen,
phi-1) is lossless on any Unicode text, so nothing needs normalizing; a tokenizer with a lossy
normalizer still works, it just does not round-trip.

A literal ``<|endoftext|>`` *inside* a document is encoded as ordinary text, never as the special
token: otherwise one file could forge a document boundary in the training stream.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phi_hpc.errors import UsageError


def resolve_tokenizer_path(path: str) -> Path:
    """The file that defines the tokenizer: a ``tokenizer.json``, a folder, or a hub id such as
    ``microsoft/phi-1`` (from huggingface_hub's cache; see :mod:`phi_hpc.fetch`), or a UsageError."""
    from phi_hpc.fetch import resolve_tokenizer

    return resolve_tokenizer(path)


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from a file or folder; errors name the path and say what to give.

    Cached per process (parsing a 50k-merge BPE takes a noticeable fraction of a second), so callers
    must not reconfigure the returned object.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    file = resolve_tokenizer_path(path)
    try:
        if file.name == "vocab.json":
            merges = file.with_name("merges.txt")
            if not merges.is_file():
                raise UsageError(f"--tokenizer {path}: vocab.json without merges.txt", "add merges.txt")
            tokenizer = Tokenizer(BPE.from_file(str(file), str(merges)))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
        else:
            tokenizer = Tokenizer.from_file(str(file))
    except UsageError:
        raise
    except Exception as exc:  # tokenizers raises plain Exception subclasses for malformed files
        raise UsageError(f"--tokenizer {file}: not a valid tokenizer ({exc})", "give a tokenizer.json") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    sha256: str
    vocab_size: int
    eos_id: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "vocab_size": self.vocab_size, "eos_id": self.eos_id}


def describe_tokenizer(path: str, eos_token: str) -> TokenizerInfo:
    """Hash, vocabulary size and EOS id; fails early (before any work) if there is no EOS token."""
    tokenizer = load_tokenizer(path)
    eos_id = tokenizer.token_to_id(eos_token)
    if eos_id is None:
        raise UsageError(
            f"--tokenizer {path}: has no {eos_token!r} token",
            "use a tokenizer with an end-of-text token or set --set eos_token=...",
        )
    file = resolve_tokenizer_path(path)
    digest = hashlib.sha256(file.read_bytes())
    if file.name == "vocab.json":
        digest.update(file.with_name("merges.txt").read_bytes())
    return TokenizerInfo(
        str(file.resolve()), digest.hexdigest(), tokenizer.get_vocab_size(with_added_tokens=True), int(eos_id)
    )


class DocumentEncoder:
    """Encodes batches of documents, each followed by the EOS id.

    The ids come from tiktoken where it reproduces the tokenizer (:mod:`phi_hpc.data.fast_bpe`,
    ``backend``), else from tokenizers' ``encode_batch_fast``; :attr:`backend` says which and why."""

    def __init__(self, path: str, eos_id: int, backend: str = "auto"):
        from phi_hpc.data.fast_bpe import fast_encoder

        self.tokenizer = load_tokenizer(path)
        self.eos_id = eos_id
        try:
            self.fast, self.backend = fast_encoder(self.tokenizer, backend)
        except ValueError as exc:
            raise UsageError(f"--set tokenizer_backend={backend}: {exc}", "use tokenizer_backend=auto") from None

    @classmethod
    @functools.lru_cache(maxsize=4)
    def cached(cls, path: str, eos_id: int, backend: str = "auto") -> DocumentEncoder:
        """One encoder per process and tokenizer (loading a 50k-entry BPE takes a moment)."""
        return cls(path, eos_id, backend)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, without EOS."""
        if self.fast is not None:
            return self.fast.encode(list(texts))
        return [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def disagreement(self, texts: Sequence[str], chars: int = 8192) -> int | None:
        """Where tiktoken's ids differ from tokenizers' on the first ``chars`` characters of ``texts``
        (the index of the text), or None; always None when tokenizers does the encoding."""
        if self.fast is None:
            return None
        sample: list[str] = []
        for text in texts:
            if chars <= 0:
                break
            sample.append(text[:chars])
            chars -= len(sample[-1])
        return self.fast.disagreement(self.tokenizer, sample)

    def encode_flat(self, texts: Sequence[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Every document's ids followed by EOS, back to back in ``dtype``, and each one's length.

        One list and one array conversion per batch instead of a numpy array per document (the
        per-document conversions were the largest cost of the map stage after tokenization itself).
        """
        if not texts:
            return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.int64)
        flat: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        eos = self.eos_id
        for i, ids in enumerate(self.ids(texts)):
            flat += ids
            flat.append(eos)
            lengths[i] = len(ids) + 1
        tokens = np.array(flat, dtype=np.int64 if np.dtype(dtype).itemsize < 8 else dtype)
        if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(dtype).max):
            raise ValueError(f"token id out of range for {np.dtype(dtype)}")
        return tokens.astype(dtype, copy=False), lengths

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for ids in self.ids(texts):
            array = np.empty(len(ids) + 1, dtype=np.int64)
            array[:-1] = ids
            array[-1] = self.eos_id
            out.append(array)
        return out
