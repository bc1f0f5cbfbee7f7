"""Append-only JSON-lines output that survives being killed at any moment and resumes where it stopped.

Labelling and synthesis runs are long and get preempted. Each finished item is appended as one
line and fsynced, so everything before a kill is kept. A kill in the middle of a write can leave
a torn last line; opening the file again cuts it off (it was never complete, so no item is lost
that the resumed run will not redo). Items are keyed by stable ids, so a resumed run skips exactly
the items already written.

Memory stays constant per item: ``fields`` names what is kept of each record (an id, a digest, a
few band keys); the texts, which are most of the bytes, stay on disk. Streaming a billion-token
synthesis run through it costs tens of bytes per item, not the corpus.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from phi_hpc.errors import UsageError


class AppendLog:
    def __init__(self, path: str | os.PathLike, fields: tuple[str, ...] | None = None, on_record=None):
        """``fields``: the keys of each record kept in :attr:`records` (None: whole records).
        ``on_record``: called with every whole record read back (to rebuild an index as it streams by)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields = fields
        self._on_record = on_record
        self.records: list[dict] = []
        self.repaired_bytes = 0
        if self.path.exists():
            self._load()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        size = self.path.stat().st_size
        complete = self._last_newline()  # a torn last line is cut off
        if complete < size:
            self.repaired_bytes = size - complete
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)
        with open(self.path, "rb") as handle:  # streamed: the file is never read whole
            for line_no, raw in enumerate(handle, 1):
                self._load_line(raw.decode("utf-8"), line_no)

    def _load_line(self, line: str, line_no: int) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{self.path}:{line_no}: invalid JSON ({exc.msg})",
                "this file was not written by phi-hpc; choose another -o",
            ) from None
        if not isinstance(record, dict) or "id" not in record:
            raise UsageError(
                f"{self.path}:{line_no}: a line without an 'id'",
                "this file was not written by phi-hpc; choose another -o",
            )
        if self._on_record is not None:
            self._on_record(record)
        self.records.append(self._kept(record))

    def _last_newline(self) -> int:
        """Offset just after the file's last newline, read backwards 1 MB at a time."""
        position = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            while position > 0:
                start = max(position - (1 << 20), 0)
                handle.seek(start)
                chunk = handle.read(position - start)
                if b"\n" in chunk:
                    return start + chunk.rfind(b"\n") + 1
                position = start
        return 0

    def _kept(self, record: dict) -> dict:
        return record if self.fields is None else {k: record[k] for k in self.fields if k in record}

    @property
    def ids(self) -> set[str]:
        return {r["id"] for r in self.records}

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.append(self._kept(record))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
