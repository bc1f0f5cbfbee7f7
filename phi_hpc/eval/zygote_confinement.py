"""Setting a program up before it runs: once per worker, and per program between fork and request.

It runs INSIDE the sandbox as part of the zygote (``worker.ZYGOTE_PARTS``: one namespace, stdlib
only), never imported on the host. The system calls themselves are in ``confine.py``; this part
decides when each is made. Once per worker (``_enter_worker_namespaces``): the zygote takes a host
uid for the programs (as root), a user namespace of its own and the init's place in a new pid
namespace; ``_probe_namespaces`` and ``_probe_program_proc`` find first what this machine allows.
Per program (``_become_program``, forked by ``zygote.prepare`` straight into a fresh pid namespace):
a fresh session keyring, new IPC and mount namespaces with a fresh capped /tmp and /dev/shm, no
capabilities, the seccomp filter, then the request's rlimits. Without namespaces (user namespaces
disabled) a program gets a work folder of its own and, as root, the programs' uid instead.
"""

import json
import os
import resource
import struct
import sys

if False:  # for readers and linters only: names of the parts that run before this one (same namespace)
    from phi_hpc.eval.confine import (
        drop_capabilities,
        enter_namespaces,
        enter_program_namespaces,
        fork_into_new_pid_namespace,
        hide_key_lists,
        install_seccomp,
        join_fresh_session_keyring,
        mount_private_tmp,
        mount_proc,
        set_dumpable,
    )
    from phi_hpc.eval.zygote_harness import run_program
    from phi_hpc.eval.zygote_protocol import (
        EXPOSE,
        IN_PID_NAMESPACE,
        KEEP,
        NAMESPACES,
        PROGRAM_PROC,
        RUN_UID,
        SHM_BYTES,
        TMP_BYTES,
        TMP_INODES,
        WORK_ROOT,
        _exit,
        _read_exactly,
    )


_RLIMITS = {
    "address_space": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "processes": resource.RLIMIT_NPROC,
}


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


def _prepare_work_dir(serial):
    path = os.path.join(WORK_ROOT, f"run{serial}")
    os.mkdir(path, 0o700)
    if RUN_UID is not None:
        os.chown(path, RUN_UID, RUN_UID)
    return path


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
