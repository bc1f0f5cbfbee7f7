"""Helpers shared by the data tests: a real stdlib corpus and an independent Megatron reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

# Real code, present on every machine: a few stdlib packages (~1.9 MB, ~150 files, some empty).
STDLIB_PACKAGES = ("asyncio", "concurrent", "email", "http", "importlib", "json", "urllib", "xml")


@pytest.fixture(scope="session")
def stdlib_packages(stdlib_dir) -> list[Path]:
    return [stdlib_dir / name for name in STDLIB_PACKAGES]


def read_megatron(prefix: str | Path) -> tuple[np.dtype, list[np.ndarray]]:
    """Read a Megatron MMapIndexedDataset pair straight from the format description, with struct and
    numpy only (deliberately not phi_hpc.data.indexed): magic, version, dtype code, counts, int32
    lengths, int64 byte pointers, int64 document index."""
    codes = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
    raw = Path(f"{prefix}.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct.unpack_from("<QBQQ", raw, 9)
    assert version == 1
    dtype = np.dtype(codes[code])
    pos = 9 + 8 + 1 + 8 + 8
    lengths = struct.unpack_from(f"<{n_seq}i", raw, pos)
    pos += 4 * n_seq
    pointers = struct.unpack_from(f"<{n_seq}q", raw, pos)
    pos += 8 * n_seq
    doc_index = struct.unpack_from(f"<{n_doc}q", raw, pos)
    pos += 8 * n_doc
    assert pos == len(raw), "trailing bytes in .idx"
    assert doc_index[0] == 0 and doc_index[-1] == n_seq
    data = Path(f"{prefix}.bin").read_bytes()
    sequences = []
    expected_pointer = 0
    for length, pointer in zip(lengths, pointers):
        assert pointer == expected_pointer, "sequences are not back to back"
        sequences.append(np.frombuffer(data, dtype=dtype, count=length, offset=pointer))
        expected_pointer += length * dtype.itemsize
    assert expected_pointer == len(data), ".bin has bytes no sequence owns"
    return dtype, sequences
