"""What a pip user gets: the wheel carries the configs and sbatch templates, resolved the same way as in
a checkout, and no file of the product names this machine or the data folder beside the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.datafiles import MIRROR_ENV

PRODUCT = ("phi_hpc", "configs", "benchmarks", "slurm")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".sbatch", ".txt", ".md", ".toml", ".cfg", ""}


def _files(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
            yield path


def test_no_product_file_names_the_data_folder_or_a_machine_path():
    # the checkout's own path, the folder it lies in (unless a generic one such as /tmp) and the home folder
    forbidden = ["../shared", "shared/data", MIRROR_ENV, str(REPO_ROOT)]
    generic = {"/", "/tmp", "/var/tmp", "/home", "/opt", "/usr", "/root", "/srv", "/mnt"}
    forbidden += [f"{folder}/" for folder in (str(REPO_ROOT.parent), str(Path.home())) if folder not in generic]
    # each needle literally, plus the same folder spelled as path parts: REPO.parent / "shared" / "data"
    needles = [(needle, re.compile(re.escape(needle))) for needle in forbidden]
    needles.append(("shared/data as path parts", re.compile(r"""["']shared["']\s*/\s*["']data["']""")))
    hits = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {label}"
        for folder in PRODUCT
        for path in _files(REPO_ROOT / folder)
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        for label, pattern in needles
        if pattern.search(line)
    ]
    # benchmarks/data.py may name the mirror's variable (it reuses the tests' resolver); nothing else may
    hits = [hit for hit in hits if not (hit.startswith("benchmarks/data.py:") and hit.endswith(MIRROR_ENV))]
    assert hits == []


def test_tests_reach_the_data_mirror_only_through_datafiles():
    users = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in _files(REPO_ROOT / "tests")
        if path.suffix == ".py" and MIRROR_ENV in path.read_text(encoding="utf-8")
    ]
    assert users == ["tests/datafiles.py"]


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` on a copy of the source (so the build leaves nothing in the checkout)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("phi_hpc", "configs", "slurm"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("phi_hpc-*.whl")
    return wheel


def test_the_wheel_ships_configs_and_templates_found_by_the_same_names(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"phi_hpc/configs/{p.relative_to(REPO_ROOT / 'configs').as_posix()}"
        for p in (REPO_ROOT / "configs").rglob("*.yaml")
    }
    expected |= {f"phi_hpc/templates/{p.name}" for p in (REPO_ROOT / "slurm" / "templates").glob("*.sbatch")}
    assert expected and expected <= names
    assert not any(name.startswith(("configs/", "slurm/", "tests/")) for name in names)

    # Unpacked like pip installs it, away from any checkout: the resolver finds the packaged copies,
    # and `configs list` names the same files as in this checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PHI_HPC_CONFIG_DIR")}

    def listing(path: Path) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "phi_hpc", "configs", "list", "--paths"],
            capture_output=True,
            text=True,
            env=dict(env, PYTHONPATH=str(path)),
            cwd=tmp_path,
            timeout=120,
            check=True,
        )
        return done.stdout.splitlines()

    installed, checkout = listing(site), listing(REPO_ROOT)
    assert [row.split("\t")[0] for row in installed] == [row.split("\t")[0] for row in checkout]
    assert all(row.split("\t")[1].startswith(str(site / "phi_hpc")) for row in installed)
    assert any(row.startswith("configs/model/phi-1.yaml") for row in installed)
