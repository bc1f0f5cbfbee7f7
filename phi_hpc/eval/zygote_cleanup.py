"""After a program: kill what is left of it, reap it, wipe what it wrote, check the world is clean.

It runs INSIDE the sandbox as part of the zygote (``worker.ZYGOTE_PARTS``: one namespace, stdlib
only), never imported on the host. With per-program namespaces a program's processes die with its
pid namespace and its /tmp with its mount namespace; ``_world_is_clean`` checks that nothing
remains anyway (else ``zygote.run_one`` asks the host to replace this zygote). Without them, the
work folder and the worker's private /tmp and /dev/shm are wiped here.
"""

import os
import signal
import time

if False:  # for readers and linters only: names of the parts that run before this one (same namespace)
    from phi_hpc.eval.zygote_protocol import IN_PID_NAMESPACE, KEEP, NAMESPACES, PRIVATE_TMP, WORK_ROOT


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


def _world_is_clean():
    """After a program: nothing of it may remain where the next one could find it. With per-program
    namespaces it never could; this checks that it did not (else the zygote is replaced)."""
    problems = []
    if PRIVATE_TMP:
        allowed = {WORK_ROOT} | KEEP | {os.path.dirname(k) for k in KEEP}
        left = [os.path.join("/tmp", n) for n in os.listdir("/tmp")] + [
            os.path.join("/dev/shm", n) for n in os.listdir("/dev/shm")
        ]
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
