"""What ``phi-hpc doctor``'s probe job learns on a compute node, written as JSON into the run folder.

Run as ``python -m phi_hpc.launch.probe OUT.json`` inside a tiny Slurm job. Unlike the doctor itself
(login node: no torch), this imports torch: finding out whether it works *there* is the point. Every
probe is caught, so one broken piece still leaves the others' answers in the file; the file is written
under a temporary name and renamed, so the login node never reads half of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path


def probe_torch() -> dict:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return {"torch": None, "torch_error": f"{type(exc).__name__}: {exc}"}
    result = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "nccl": None,
    }
    if result["cuda"]:
        try:
            result["nccl"] = ".".join(str(part) for part in torch.cuda.nccl.version())
        except Exception as exc:  # noqa: BLE001
            result["nccl_error"] = f"{type(exc).__name__}: {exc}"
    return result


def probe_bwrap() -> dict:
    from phi_hpc.eval.sandbox import isolation_available

    return {"bwrap": bool(shutil.which("bwrap")) and isolation_available("bwrap")}


def probe(out: Path) -> dict:
    tmp = shutil.disk_usage("/tmp")
    result = {
        "host": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "python": sys.version.split()[0],
        "tmp_free_bytes": tmp.free,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    for part in (probe_torch, probe_bwrap):
        try:
            result.update(part())
        except Exception as exc:  # noqa: BLE001
            result[f"{part.__name__}_error"] = f"{type(exc).__name__}: {exc}"
    from phi_hpc.fileio import write_json

    write_json(out, result)
    return result


if __name__ == "__main__":
    print(probe(Path(sys.argv[1])))
