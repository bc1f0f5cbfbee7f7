"""The code a job runs: a copy of the submitted ``phi_hpc`` package (and ``configs/``) in the run folder.

A weeks-long run is requeued days after its submission. If jobs imported the live checkout through
``PYTHONPATH``, a requeue would run whatever is checked out by then (another branch, a half-edited
file). So, like submitit's ``RsyncSnapshot``, a submission copies the package into
``RUN/code/<hash>/`` (the hash of its content: resubmitting unchanged code reuses the copy, changed
code gets a new one and older jobs keep theirs) and the job puts that folder first on ``PYTHONPATH``.
Jobs submitted from inside a job (the evaluations of ``--eval-every``) already run from such a copy
and reuse it. Installed dependencies (torch, deepspeed, ...) are not copied: they come from the
job's Python environment as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from phi_hpc.paths import SOURCE_ROOT
from phi_hpc.run_layout import CODE_DIR, RunLayout

COPIED = ("phi_hpc", "configs")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache"}


def _files(root: Path) -> list[Path]:
    found = []
    for top in COPIED:
        base = root / top
        if not base.is_dir():
            continue
        for folder, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            found += [Path(folder, name) for name in sorted(names) if not name.endswith((".pyc", ".pyo"))]
    return found


def code_hash(root: Path = SOURCE_ROOT) -> str:
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def running_from_copy(root: Path = SOURCE_ROOT) -> bool:
    return root.parent.name == CODE_DIR and RunLayout(root.parent.parent).run_record.is_file()


def snapshot_code(run_dir: Path, root: Path = SOURCE_ROOT) -> Path:
    """``RUN/code/<hash>`` holding a copy of ``root``'s phi_hpc/ and configs/ (made once per content)."""
    if running_from_copy(root):
        return root
    target = RunLayout(run_dir).code / code_hash(root)
    if target.is_dir():
        return target
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    for path in _files(root):
        destination = partial / path.relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    try:
        os.replace(partial, target)  # complete or absent, also for a concurrent submission
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
