"""Keep the decontamination index cache of these tests out of the user's home."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quality_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("phi-hpc-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, quality_cache_dir):
    monkeypatch.setenv("PHI_HPC_CACHE_DIR", str(quality_cache_dir))
