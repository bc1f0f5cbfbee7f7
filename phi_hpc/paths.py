"""Where phi-hpc itself lives, and where it caches what it downloads or derives (standard library only).

:data:`PACKAGE_DIR` is the imported ``phi_hpc/`` folder and :data:`SOURCE_ROOT` the folder that holds
it: a checkout (with ``setup.py``, ``configs/``, ``slurm/``) or site-packages. Code that needs the
checkout asks :func:`phi_hpc.resources.checkout_root`, which also checks that it is one.

:func:`cache_root` is the one cache folder; each user of it takes a subfolder (``mbpp/`` for the MBPP
files, ``decontamination/`` for the contamination index). Which folder, first match wins:

1. ``$PHI_HPC_CACHE_DIR`` (phi-hpc's caches alone somewhere else, e.g. a scratch filesystem);
2. ``$XDG_CACHE_HOME/phi-hpc`` (the desktop convention, also how the tests isolate the MBPP cache);
3. ``~/.cache/phi-hpc``.

Jobs read these caches on compute nodes (``submit`` fills them on the login node), so on a cluster the
folder must be on a filesystem the nodes see.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
CACHE_DIR_ENV = "PHI_HPC_CACHE_DIR"


def cache_root() -> Path:
    """phi-hpc's cache folder (see the module docstring for the order of the environment variables)."""
    own = os.environ.get(CACHE_DIR_ENV)
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "phi-hpc"
