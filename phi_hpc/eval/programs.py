"""What the sandbox runs and what comes back: a program, its limits, its result.

Plain frozen records shared by the runner (``sandbox.Sandbox``) and the host's handle on one zygote
(``worker.Zygote``), which sends ``Program`` and ``SandboxLimits.request_fields`` to the zygote and
turns its reply into a ``ProgramResult``.
"""

from __future__ import annotations

import dataclasses

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. ``cpu_seconds`` None means the timeout plus two seconds: a backstop only,
    the wall clock normally kills first (and also catches programs that sleep or block)."""

    timeout_s: float = 20.0
    address_space_bytes: int = 4 * GIB
    cpu_seconds: int | None = None
    file_size_bytes: int = 64 << 20
    open_files: int = 256
    processes: int = 64
    output_bytes: int = 64 << 10
    tree_memory_bytes: int | None = None  # resident memory of all the program's processes; None: = address space
    tmp_bytes: int = 256 << 20  # size of each program's private /tmp (it is memory)
    shm_bytes: int = 64 << 20  # size of each program's private /dev/shm (multiprocessing needs one)
    tmp_inodes: int = 16384  # files and folders in each of them (each costs kernel memory no rlimit counts)

    def request_fields(self, pid_namespace: bool = True) -> dict:
        cpu = self.cpu_seconds if self.cpu_seconds is not None else int(self.timeout_s) + 2
        tree = self.tree_memory_bytes if self.tree_memory_bytes is not None else self.address_space_bytes
        return {
            "timeout": self.timeout_s,
            "tree_memory": tree if pid_namespace else None,  # polled in /proc: needs our own pid namespace
            "output_limit": self.output_bytes,
            "limits": {
                "address_space": self.address_space_bytes,
                "cpu_seconds": cpu,
                "file_size": self.file_size_bytes,
                "open_files": self.open_files,
                "processes": self.processes,
            },
        }


@dataclasses.dataclass(frozen=True)
class Program:
    """What runs: the solution first, then the tests in a fresh namespace (``zygote_harness``).

    ``setup``: trusted code run first in the tests' namespace (HumanEval's prompt: its helpers are the
    dataset's, not the solution's). ``entry_point``: the solution's function under test; the harness
    then calls the tests' ``check`` on it itself. ``expose``: other names the tests take from the
    solution even where they shadow a builtin (MBPP's ``sum``). Other names the tests read come from
    the solution unless they are builtins; modules are imported afresh.
    """

    solution: str
    tests: str
    setup: str = ""
    entry_point: str | None = None
    expose: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProgramResult:
    status: str  # passed | failed | timeout | error
    error: str | None  # the error's last line ("AssertionError", "NameError: ...", "killed by SIGSEGV")
    duration_s: float
    output: str  # captured stdout+stderr, head and tail kept within the limit
    isolation: str
    warning: str | None = None
    exit_code: int | None = None
    signal: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"
