"""A memory cgroup per sandbox worker, where one can be had (root, or a delegated cgroup).

RLIMIT_AS bounds one process and the zygote's polling sums resident memory, but neither counts kernel
memory (inodes, page tables, socket buffers) nor tmpfs and shared memory pages. A memory cgroup counts
all of it; its limit is the tree limit plus the sizes of the program's tmpfs mounts plus slack for the
zygote. cgroup v2 (``memory.max``) needs ``memory`` in the parent's ``cgroup.subtree_control``; v1
(``memory.limit_in_bytes``) needs a writable memory hierarchy. Elsewhere (an ordinary user without
delegation) there is none, and ``unavailable_reason`` says so.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
SLACK_BYTES = 256 << 20  # the zygote interpreter and the page cache of what programs read


def _parent() -> tuple[str, Path] | None:
    """("v2" | "v1", the folder of our own memory cgroup) when we may create children in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and (ROOT / "cgroup.controllers").exists():
            base = ROOT / path.lstrip("/")
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" in enabled and os.access(base, os.W_OK):
                return "v2", base
        elif "memory" in controllers.split(","):
            base = ROOT / "memory" / path.lstrip("/")
            if base.is_dir() and os.access(base, os.W_OK):
                return "v1", base
    return None


def unavailable_reason() -> str | None:
    if _parent() is None:
        return (
            "no memory cgroup could be had (needs root or a delegated cgroup): programs' memory is "
            "bounded per process (RLIMIT_AS), by polling their resident memory and by their tmpfs sizes; "
            "kernel memory is not counted"
        )
    return None


class MemoryCgroup:
    """One worker's cgroup: ``wrap(command)`` starts the command inside it; ``remove()`` after it ended."""

    def __init__(self, limit_bytes: int):
        parent = _parent()
        if parent is None:
            raise OSError("no writable memory cgroup")
        self.version, base = parent
        self.path = base / f"phi-hpc-sandbox-{os.getpid()}-{secrets.token_hex(4)}"
        self.path.mkdir()
        try:
            if self.version == "v2":
                (self.path / "memory.max").write_text(str(limit_bytes))
                if (self.path / "memory.swap.max").exists():
                    (self.path / "memory.swap.max").write_text("0")
            else:
                (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                if (self.path / "memory.memsw.limit_in_bytes").exists():
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        except OSError:
            self.remove()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        """A shell that moves itself into the cgroup, then becomes the command: everything the
        command starts is inside from its first instruction."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]

    def remove(self) -> None:
        """The kernel frees a cgroup a moment (about 1 ms) after its last process is reaped: retry
        with short, growing pauses for up to about a second (a fixed 20 ms pause cost every run 20 ms)."""
        pause, give_up = 0.001, time.monotonic() + 1.0
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > give_up:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
