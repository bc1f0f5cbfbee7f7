"""The benchmarks' data files, found the way the tests find theirs (``tests/datafiles.py``): the mirror
folder named by ``PHI_HPC_SHARED_DATA``, else the real upstream through phi-hpc's own resolvers."""

from __future__ import annotations

from pathlib import Path

from tests.datafiles import DataMissing, benchmark_folder, resolve  # importable: see benchmarks/checkout.py


def data_file(name: str) -> Path:
    """``tokenizer`` (phi-1's), ``humaneval``, ``mbpp``, ``mbpp-sanitized``; exits with one line if missing."""
    try:
        return resolve(name)
    except DataMissing as exc:
        raise SystemExit(f"error: {exc}") from None


def benchmark_data(scratch: Path) -> Path:
    """A folder with HumanEval and both MBPP files (``--benchmark-data``); links go under ``scratch``."""
    try:
        return benchmark_folder(scratch)
    except DataMissing as exc:
        raise SystemExit(f"error: {exc}") from None
