"""The host's side of one sandbox worker: start its zygote, talk to it, replace it when it fails.

A zygote (``zygote.py`` and the parts before it) is one long-lived interpreter inside the worker's
sandbox that forks a fresh process per program. Its code never has to be found inside the sandbox
(bubblewrap binds no project folder, and the programs' uid may not read a checkout): the host reads
``ZYGOTE_PARTS`` from this package's folder (a checkout or an installed wheel alike), compiles each
once per process and sends the code objects over the zygote's stdin, where ``ZYGOTE_BOOT`` runs them
in order in one namespace. Every part is stdlib-only for that reason.

Protocol on the zygote's fds 0/1: each message is a 4-byte big-endian length and a JSON object; every
request carries a fresh nonce its reply must echo (``Zygote.run``), and a zygote whose cleanup check
failed asks to be replaced (``replace_reason``).
"""

from __future__ import annotations

import functools
import json
import marshal
import os
import secrets
import select
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from phi_hpc.errors import PhiError
from phi_hpc.eval.cgroup import SLACK_BYTES, MemoryCgroup
from phi_hpc.eval.isolation import bwrap_command, hidden_ancestors, python_roots, unshare_command
from phi_hpc.eval.programs import Program, SandboxLimits

# The zygote's code, in the order it runs: one namespace in there, so a part may use the names of the
# parts before it (each says which, in an ``if False:`` import block that only readers and linters see).
# ``zygote.py`` comes last: it ends by calling ``main()``.
ZYGOTE_PARTS = tuple(
    Path(__file__).with_name(name)
    for name in (
        "confine.py",
        "zygote_protocol.py",
        "zygote_harness.py",
        "zygote_confinement.py",
        "zygote_cleanup.py",
        "zygote_collect.py",
        "zygote.py",
    )
)
# The zygote's ``-c`` program: it reads its compiled parts (``_zygote_code``) from its stdin, framed like
# every message, then runs them; fds 0/1 then carry the protocol.
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
    "for _part in marshal.loads(_take(struct.unpack('>I', _take(4))[0])):\n"
    "    exec(_part)\n"
)


class SandboxCrashed(PhiError):
    """The sandbox server died or could not start (a user-facing error if it cannot be restarted)."""

    def __init__(self, message: str):
        super().__init__(
            message,
            "check that bubblewrap works here (bwrap --ro-bind / / true), or pick another level with --isolation",
        )


@functools.cache
def _zygote_code() -> bytes:
    """The parts compiled, once per process: compiling them in every zygote cost ~20 ms of each
    worker's start. Each keeps its own file name, so a traceback in the zygote's log points at the
    right file and line. The zygote runs ``sys.executable``, ours: the marshal format matches."""
    return marshal.dumps(tuple(compile(path.read_text(), path.name, "exec") for path in ZYGOTE_PARTS))


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
        settings = {
            "uid": self.run_uid,
            "pid_namespace": in_pid_namespace,
            "work_root": work_root,
            "private_tmp": self.isolation == "bwrap",
            "tmp_bytes": self.limits.tmp_bytes,
            "shm_bytes": self.limits.shm_bytes,
            "tmp_inodes": self.limits.tmp_inodes,
            # bound read-only into /tmp: each program's fresh /tmp binds them back, the checks spare them
            "keep": [r for r in python_roots() if r.startswith(("/tmp/", "/dev/shm/"))],
            # unshare as root: re-expose an interpreter that lies in a folder other uids cannot enter
            "expose": hidden_ancestors() if self.isolation != "bwrap" and self.run_uid else {},
        }
        inner = [sys.executable, "-I", "-c", ZYGOTE_BOOT, json.dumps(settings)]
        if self.isolation == "bwrap":
            command = bwrap_command(inner, self.limits.tmp_bytes)
        elif self.isolation == "unshare":
            command = unshare_command(inner)
        else:
            command = inner
        if self.cgroup is not None:
            command = self.cgroup.wrap(command)
        # The zygote's own stderr (never the programs') goes to a file: its tail explains a crash.
        self._log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={},
            cwd=self._host_tmp.name if self._host_tmp else "/",
            start_new_session=True,
        )
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
        request = dict(
            self.limits.request_fields(pid_namespace=self.isolation in ("bwrap", "unshare")),
            nonce=nonce,
            solution=program.solution,
            tests=program.tests,
            setup=program.setup,
            entry_point=program.entry_point,
            expose=list(program.expose),
        )
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
