"""The checkout these benchmarks belong to, put first on ``sys.path`` so that they measure its phi_hpc.

Every benchmark runs as ``python benchmarks/NAME.py`` from anywhere (this folder is then ``sys.path[0]``)
and starts with ``from checkout import REPO``, which also makes ``phi_hpc``, ``benchmarks.*`` and
``tests.datafiles`` importable without installing.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
