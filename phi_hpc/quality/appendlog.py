"""Append-only JSON-lines output that survives being killed at any moment and resumes where it stopped.

Labelling and synthesis runs are long and get preempted. Each finished item is appended as one
line and fsynced, so everything before a kill is kept. A kill in the middle of a write can leave
a torn last line; opening the file again cuts it off (it was never complete, so no item is lost
that the resumed run will not redo). Items are keyed by stable ids, so a resumed run skips exactly
the items already written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from phi_hpc.errors import UsageError


class AppendLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.repaired_bytes = 0
        if self.path.exists():
            self._load()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self.repaired_bytes = len(data) - complete
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)
        for line_no, line in enumerate(data[:complete].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{self.path}:{line_no}: invalid JSON ({exc.msg})",
                                 "this file was not written by phi-hpc; choose another -o") from None
            if not isinstance(record, dict) or "id" not in record:
                raise UsageError(f"{self.path}:{line_no}: a line without an 'id'",
                                 "this file was not written by phi-hpc; choose another -o")
            self.records.append(record)

    @property
    def ids(self) -> set[str]:
        return {r["id"] for r in self.records}

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "AppendLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
