"""Crash-safe file writing: every output appears complete or not at all.

A job killed by Slurm (SIGKILL after the grace period) must never leave a half-written file under its
final name, because the next run trusts whatever it finds there. So everything is written to a
temporary sibling, flushed, fsynced and renamed; ``rename`` within one directory is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; colleagues must read outputs
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would race with other threads.
_UMASK = _read_umask()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write pretty, key-sorted JSON (stable diffs, easy to read on a login node)."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def iter_jsonl(path: str | os.PathLike, hint: str) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    A line that is not JSON is a one-line :class:`~phi_hpc.errors.UsageError` naming ``path:line``,
    with ``hint`` as the fix. For small files (samples, labels, benchmarks); corpora are streamed
    by ``phi_hpc.data.sources``, which counts bad lines instead of stopping.
    """
    from phi_hpc.errors import UsageError

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{line_number}: invalid JSON ({exc.msg})", hint) from None
            yield line_number, record


def iter_entries(path: str | os.PathLike) -> Iterator[str | dict]:
    """The entries of a list file: each non-blank line, stripped, or its JSON object when the line starts
    with ``{`` (a table phi-hpc wrote, e.g. decontamination's per-problem rows or a topic tree).

    A ``{`` line that is not JSON is a one-line :class:`~phi_hpc.errors.UsageError` naming ``path:line``.
    """
    from phi_hpc.errors import UsageError

    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if not line.startswith("{"):
                yield line
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{line_number}: invalid JSON ({exc.msg})") from None


def read_jsonl(path: str | os.PathLike, hint: str) -> list[Any]:
    """All records of a JSON-lines file (see :func:`iter_jsonl`)."""
    return [record for _, record in iter_jsonl(path, hint)]


def tail_lines(path: str | os.PathLike, count: int, block: int = 65536) -> list[str]:
    """The last ``count`` lines of a file, reading only its end ([] when it cannot be read): logs and
    metrics of a week-long run answer as fast as a new one's."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            data = b""
            while size > 0 and data.count(b"\n") <= count:
                step = min(block, size)
                size -= step
                handle.seek(size)
                data = handle.read(step) + data
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-count:]
