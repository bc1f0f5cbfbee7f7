"""What a run reports: one JSON line per step in ``RUN/metrics.jsonl``, a console line, TensorBoard.

Throughput is stated once, plainly (the convention is :mod:`phi_hpc.model.flops`'s)::

    tokens_per_s = global_batch x seq_len / step wall time      (whole job, data loading included)
    tflops       = tokens_per_s x training_flops_per_token / world_size / 1e12   (achieved, per device)
    mfu          = tflops / the device's dense bf16/fp16 peak   (null where the peak is unknown: CPUs)

Only rank 0 writes; the other ranks hold a writer that does nothing, so call sites need no ``if``.
On resume the lines after the checkpoint's step are dropped: they describe steps that are about to be
recomputed, and a metrics file with two different step 12s would be a lie to every reader.

:func:`read_metrics` is the one reader of the file (``status``, ``plan --mfu-from``, ``eval curve``,
the demo and the writer's own truncation all use it), with one rule for a bad line (see there).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from phi_hpc.fileio import atomic_write, tail_lines


class MetricsWriter:
    def __init__(self, path: str | os.PathLike, enabled: bool, tensorboard_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self._handle = None
        self._tensorboard = None
        if enabled and tensorboard_dir is not None:
            self._tensorboard = _tensorboard_writer(tensorboard_dir)

    def truncate_after(self, step: int) -> None:
        """Keep only the lines of steps ``<= step`` (atomically; a torn last line goes too)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        with atomic_write(self.path) as handle:
            handle.writelines(json.dumps(record, sort_keys=True) + "\n" for record in kept)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()  # `phi-hpc status` and `logs --follow` read this file while we train
        if self._tensorboard is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(path: str | os.PathLike, last: int | None = None) -> list[dict]:
    """The records of a ``metrics.jsonl``, in file order ([] when there is no file).

    ``last``: only the last N lines, read from the end of the file (``status`` on a week-long run).

    The one rule for a bad line: a last line that is not a JSON object is skipped, because it is a
    line being appended right now (readers run while the trainer writes) or one a killed job left
    half-written; any other such line is damage, and an error naming ``path:line``. Blank lines
    are ignored.
    """
    path = Path(path)
    lines = tail_lines(path, last) if last is not None else _all_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif index < len(lines) - 1:
            if last is not None:
                return read_metrics(path)  # find the damaged line's number
            from phi_hpc.errors import PhiError

            raise PhiError(
                f"{path}:{index + 1}: not a JSON line", "the metrics file is damaged; remove or fix that line"
            )
    return records


def _all_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _tensorboard_writer(directory):
    """A SummaryWriter when the tensorboard package is installed; None (said once) otherwise."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "[train] tensorboard is not installed: metrics go to metrics.jsonl only "
            "(pip install tensorboard to get event files)",
            file=sys.stderr,
            flush=True,
        )
        return None
    return SummaryWriter(log_dir=str(directory))


class Throughput:
    """Turns (tokens, seconds) into tokens/s, achieved TFLOP/s per device and MFU."""

    def __init__(self, flops_per_token: float, world_size: int, peak_flops_per_device: float | None):
        self.flops_per_token = flops_per_token
        self.world_size = world_size
        self.peak = peak_flops_per_device

    def measure(self, tokens: int, seconds: float) -> dict:
        tokens_per_s = tokens / seconds if seconds > 0 else 0.0
        flops_per_device = tokens_per_s * self.flops_per_token / self.world_size
        return {
            "tokens_per_s": round(tokens_per_s, 2),
            "tflops": round(flops_per_device / 1e12, 6),
            "mfu": round(flops_per_device / self.peak, 6) if self.peak else None,
        }


def device_peak_flops(device_type: str, override_tflops: float | None) -> float | None:
    """Peak dense bf16/fp16 FLOP/s of one device: the config's override, the GPU table, or unknown."""
    if override_tflops:
        return override_tflops * 1e12
    if device_type != "cuda":
        return None
    import torch

    from phi_hpc.model.flops import peak_flops_for_device

    return peak_flops_for_device(torch.cuda.get_device_name())


def console_line(record: dict, total_steps: int) -> str:
    """``step 20/40 | loss 5.1234 | lr 1.00e-03 | grad 0.84 | 12,345 tok/s | 0.1 TFLOP/s | MFU 41.2%``."""
    parts = [f"step {record['step']}/{total_steps}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}"]
    if record.get("grad_norm") is not None:
        parts.append(f"grad {record['grad_norm']:.3f}")
    if record.get("loss_scale") not in (None, 1.0):
        parts.append(f"scale {record['loss_scale']:g}")
    parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    parts.append(f"{record['tflops']:.3g} TFLOP/s")
    parts.append(f"MFU {record['mfu'] * 100:.1f}%" if record.get("mfu") is not None else "MFU n/a")
    return " | ".join(parts)


class StepTimer:
    """Wall time of one step, synchronising the GPU so asynchronous kernels are counted."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> float:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - self.started
