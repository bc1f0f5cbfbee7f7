"""The benchmark corpus: the Python standard library's own source, present on every machine.

Shared by the prepare and quality benchmarks so that both measure the same files: ``.py`` files
outside ``site-packages`` and test folders, in sorted order, up to a size cap.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_py_files(max_mb: float) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if not {"site-packages", "test", "tests"} & set(p.relative_to(root).parts)
    )
    chosen, total = [], 0
    for path in files:
        size = path.stat().st_size
        if total + size > max_mb * 1e6:
            break
        chosen.append(path)
        total += size
    return chosen
