"""Megatron-LM's ``MMapIndexedDataset`` format: a writer and a zero-copy reader that mirror each other.

Why this format: it is what Megatron-LM and GPT-NeoX read, so data prepared here trains there and the
other way round. A prefix ``P`` names two files:

``P.bin``  the token ids of every sequence, back to back, in one dtype, no header.
``P.idx``  little-endian:
           ``b"MMIDIDX\\x00\\x00"`` magic (9 bytes) | version ``<Q`` = 1 | dtype code ``<B`` |
           sequence count ``<Q`` | document-index count ``<Q`` |
           sequence lengths ``int32[sequences]`` | byte offsets into .bin ``int64[sequences]`` |
           document index ``int64[documents + 1]`` (sequence numbers where documents start, from 0).

We write one sequence per document, so the document index is ``0, 1, ..., n``; the reader accepts
Megatron files with several sequences per document too.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1

# Megatron's dtype table (codes are part of the file format; never renumber).
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 halves the file size whenever every id fits (phi-1's 51200 does); else int32."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def index_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.idx")


def data_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.bin")


class IndexedDatasetWriter:
    """Append documents, then :meth:`finish` to publish ``prefix.bin``/``prefix.idx`` atomically.

    Both files are written under temporary names and renamed only when complete (``.bin`` first,
    so a visible ``.idx`` always describes a complete ``.bin``).
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type = np.uint16):
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF_DTYPE:
            raise ValueError(f"dtype {self.dtype} has no Megatron code")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = Path(f"{self.prefix}.bin.tmp.{os.getpid()}")
        self._bin = open(self._bin_tmp, "wb")
        self._lengths: list[int] = []
        self._max_id = int(np.iinfo(self.dtype).max)
        self._finished = False

    def add_document(self, tokens) -> None:
        array = np.asarray(tokens)
        if array.ndim != 1:
            raise ValueError("a document must be a 1-D sequence of token ids")
        # Range-check only when the cast could wrap: ids already in the file's dtype are fine as they
        # are, and the check (two reductions) dominates the cost of small documents.
        if array.dtype != self.dtype and array.size and not np.can_cast(array.dtype, self.dtype):
            if array.min() < 0 or array.max() > self._max_id:
                raise ValueError(f"token id out of range for {self.dtype}")
        self._bin.write(array.astype(self.dtype, copy=False).tobytes(order="C"))
        self._lengths.append(int(array.size))

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append many documents at once: ``tokens`` is their ids back to back (already in this file's
        dtype), ``lengths`` how many belong to each. One write instead of one per document."""
        if tokens.dtype != self.dtype or tokens.ndim != 1 or int(lengths.sum()) != tokens.size:
            raise ValueError(f"expected 1-D {self.dtype} tokens matching the lengths")
        self._bin.write(tokens.tobytes(order="C"))
        self._lengths.extend(lengths.tolist())

    def finish(self) -> None:
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        lengths = np.asarray(self._lengths, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_index = np.arange(len(lengths) + 1, dtype=np.int64)
        idx_tmp = Path(f"{self.prefix}.idx.tmp.{os.getpid()}")
        with open(idx_tmp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(struct.pack("<Q", VERSION))
            handle.write(struct.pack("<B", CODE_OF_DTYPE[self.dtype]))
            handle.write(struct.pack("<Q", len(lengths)))
            handle.write(struct.pack("<Q", len(doc_index)))
            handle.write(lengths.tobytes(order="C"))
            handle.write(pointers.tobytes(order="C"))
            handle.write(doc_index.tobytes(order="C"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(self._bin_tmp, data_path(self.prefix))
        os.replace(idx_tmp, index_path(self.prefix))
        self._finished = True

    def abort(self) -> None:
        if not self._bin.closed:
            self._bin.close()
        self._bin_tmp.unlink(missing_ok=True)

    def __enter__(self) -> IndexedDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._finished:
            self.finish()
        elif exc_type is not None:
            self.abort()


class IndexedDataset:
    """Zero-copy reader: ``ds[i]`` is a read-only numpy view of sequence ``i`` straight from the page cache."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        idx_file = index_path(prefix)
        with open(idx_file, "rb") as handle:
            header = handle.read(len(MAGIC) + 8 + 1 + 8 + 8)
        if header[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{idx_file}: not a Megatron MMapIndexedDataset index (bad magic)")
        offset = len(MAGIC)
        (version,) = struct.unpack_from("<Q", header, offset)
        if version != VERSION:
            raise ValueError(f"{idx_file}: unsupported index version {version}")
        (code,) = struct.unpack_from("<B", header, offset + 8)
        (n_seq,) = struct.unpack_from("<Q", header, offset + 9)
        (n_doc,) = struct.unpack_from("<Q", header, offset + 17)
        if code not in DTYPE_CODES:
            raise ValueError(f"{idx_file}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        start = len(header)
        self._idx = np.memmap(idx_file, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(self._idx, dtype=np.int32, count=n_seq, offset=start)
        self.pointers = np.frombuffer(self._idx, dtype=np.int64, count=n_seq, offset=start + 4 * n_seq)
        self.document_indices = np.frombuffer(self._idx, dtype=np.int64, count=n_doc, offset=start + 12 * n_seq)
        bin_file = data_path(prefix)
        size = bin_file.stat().st_size
        expected = int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize if n_seq else 0
        if size < expected:
            raise ValueError(f"{bin_file}: {size} bytes, index needs {expected} (truncated?)")
        self._bin = np.memmap(bin_file, mode="r", dtype=self.dtype) if size else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self._bin[start : start + int(self.sizes[i])]

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Part of sequence ``i``: what a sequence-packing sampler reads without touching the rest."""
        sequence = self[i]
        end = len(sequence) if length is None else offset + length
        return sequence[offset:end]

    @property
    def num_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))

    @property
    def tokens(self) -> np.ndarray:
        """All tokens as one flat read-only array (the concatenation training slices into blocks)."""
        return self._bin
