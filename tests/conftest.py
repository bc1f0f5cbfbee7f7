"""Shared fixtures: the real data every test reads (never committed), and small real corpora."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.datafiles import benchmark_folder, data_file

REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "phi-hpc" / "torch_extensions"))


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A folder with HumanEval and MBPP (for --benchmark-data), from tests.datafiles."""
    return benchmark_folder(tmp_path_factory.mktemp("benchmark-data"))


@pytest.fixture(scope="session")
def codegen_tokenizer() -> Path:
    """phi-1's tokenizer (codegen-350M-mono: GPT-2 BPE + whitespace-run tokens, 50295 entries)."""
    return data_file("tokenizer")


@pytest.fixture(scope="session")
def humaneval_path() -> Path:
    return data_file("humaneval")


@pytest.fixture(scope="session")
def mbpp_path() -> Path:
    return data_file("mbpp")


@pytest.fixture(scope="session")
def mbpp_sanitized_path() -> Path:
    return data_file("mbpp-sanitized")


@pytest.fixture(scope="session")
def stdlib_dir() -> Path:
    """The Python standard library: a real code corpus present on every machine."""
    return Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture
def run_cli(tmp_path):
    """Run ``phi-hpc`` in a subprocess exactly as a user would (real exit codes, real stderr)."""
    import subprocess

    def run(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600, cwd=None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        if env:
            full_env.update(env)
        proc = subprocess.run(
            [sys.executable, "-m", "phi_hpc", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd or tmp_path,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"phi-hpc {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    return run
