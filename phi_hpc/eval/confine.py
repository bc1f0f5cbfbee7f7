"""Per-program confinement, applied by the zygote between fork and the program (stdlib and ctypes only).

This file runs inside the sandbox, the first of the zygote's parts (``worker.ZYGOTE_PARTS``); when
each call is made is ``zygote_confinement.py``'s decision. Each program gets, besides the worker's
bubblewrap sandbox:

- the **user namespace** of its worker (one per zygote, entered once), where it is uid/gid 1000 with
  no capabilities (mapped to an unused host uid when the evaluator is root, to the invoking user
  otherwise), so it holds no power over the zygote or anything else, even when it shares the
  invoking user's uid;
- its own **pid namespace** (it is its init: killing it kills everything it started, and it cannot
  see or signal the zygote), **IPC namespace** (SysV IPC dies with it) and **mount namespace** with a
  fresh ``/tmp`` and ``/dev/shm`` (tmpfs capped in bytes *and* inodes; they vanish with it);
- a fresh, empty **session keyring** (the invoking user's Kerberos or other keys are not possessed);
- a **seccomp filter** (classic BPF, built here: no library needed inside the sandbox) that denies
  keyrings, SysV IPC, io_uring, new namespaces, setns, bpf, userfaultfd, memfd, ptrace,
  process_vm_*, perf_event_open and pidfd_getfd, and the x32 ABI; ``NO_NEW_PRIVS`` is set.
"""

import ctypes
import os
import platform

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x08000000, 0x10000000, 0x20000000
CLONE_NAMESPACE_FLAGS = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 24, 38, 22
PROGRAM_ID = 1000  # the program's uid and gid inside its user namespace

# name -> number, per architecture; "clone" is filtered on its flags, "clone3" gets ENOSYS (glibc then
# falls back to clone, whose flags a filter can see).
_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        {
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "shmget": 29,
            "shmat": 30,
            "shmctl": 31,
            "shmdt": 67,
            "semget": 64,
            "semop": 65,
            "semctl": 66,
            "semtimedop": 220,
            "msgget": 68,
            "msgsnd": 69,
            "msgrcv": 70,
            "msgctl": 71,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "unshare": 272,
            "setns": 308,
            "bpf": 321,
            "userfaultfd": 323,
            "memfd_create": 319,
            "memfd_secret": 447,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "perf_event_open": 298,
            "pidfd_getfd": 438,
            "mq_open": 240,
            "mount": 165,
            "open_tree": 428,
            "fsopen": 430,
            "clone": 56,
            "clone3": 435,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "shmget": 194,
            "shmctl": 195,
            "shmat": 196,
            "shmdt": 197,
            "msgget": 186,
            "msgctl": 187,
            "msgrcv": 188,
            "msgsnd": 189,
            "semget": 190,
            "semctl": 191,
            "semtimedop": 192,
            "semop": 193,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "unshare": 97,
            "setns": 268,
            "bpf": 280,
            "userfaultfd": 282,
            "memfd_create": 279,
            "memfd_secret": 447,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "perf_event_open": 241,
            "pidfd_getfd": 438,
            "mq_open": 180,
            "mount": 40,
            "open_tree": 428,
            "fsopen": 430,
            "clone": 220,
            "clone3": 435,
        },
    ),
}
ARCH = platform.machine()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result, what):
    if result < 0 if isinstance(result, int) else not result:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


def _prctl(option, arg2=0, arg3=0, arg4=0, arg5=0, what="prctl"):
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        what,
    )


def set_dumpable(flag):
    """0: /proc/<pid>/{mem,fd,...} of this process open to nobody without CAP_SYS_PTRACE over it."""
    _prctl(PR_SET_DUMPABLE, 1 if flag else 0, what="PR_SET_DUMPABLE")


def seccomp_supported():
    return ARCH in _SYSCALLS


def join_fresh_session_keyring():
    """KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous session keyring, holding nothing."""
    if ARCH not in _SYSCALLS:
        return
    _check(_libc.syscall(_SYSCALLS[ARCH][1]["keyctl"], 1, None), "keyctl(JOIN_SESSION_KEYRING)")


def enter_namespaces():
    """New user, mount, pid and IPC namespaces; this process becomes uid/gid 1000 in its user namespace,
    mapped to its current (host) uid and gid. The pid namespace applies to the children forked next."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{PROGRAM_ID} {uid} 1"),
        ("gid_map", f"{PROGRAM_ID} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


_OWN_PID_NAMESPACE = []  # fd of the worker's own pid namespace (see fork_into_new_pid_namespace)


def fork_into_new_pid_namespace():
    """fork(), the child being the init of a new pid namespace (owned by the worker's user namespace).

    unshare(CLONE_NEWPID) only sets the namespace of the *next* children, and a second one is refused
    while it differs from ours; setns back to our own pid namespace afterwards resets it, so that the
    next program gets a fresh namespace too. This saves the per-program middle process of the earlier
    design (a second fork and a user namespace per program: about half of the per-program cost)."""
    if not _OWN_PID_NAMESPACE:
        _OWN_PID_NAMESPACE.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    pid = os.fork()
    if pid:
        _check(_libc.setns(_OWN_PID_NAMESPACE[0], CLONE_NEWPID), "setns(own pid namespace)")
    return pid


def enter_program_namespaces():
    """The program's own mount and IPC namespaces (its pid namespace was made by its parent)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare(CLONE_NEWNS|CLONE_NEWIPC)")


def _mount(source, target, fstype, flags, data):
    _check(
        _libc.mount(
            source and source.encode(),
            target.encode(),
            fstype and fstype.encode(),
            ctypes.c_ulong(flags),
            data and data.encode(),
        ),
        f"mount {target}",
    )


def mount_private_tmp(tmp_bytes, shm_bytes, inodes, keep=()):
    """Fresh tmpfs on /tmp and /dev/shm, capped in bytes and in inodes (an empty file costs ~1 KB of
    kernel memory that no rlimit counts), mode 1777 whatever the umask. ``keep``: folders under them
    (a venv in /tmp) bound back read-only from the outer view."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    handles = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in keep]
    for target, size in (("/tmp", tmp_bytes), ("/dev/shm", shm_bytes)):
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},nr_inodes={inodes},mode=1777")
    for path, handle in handles:
        os.makedirs(path, 0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC, None)
        try:
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        except OSError:
            pass  # a read-only outer mount stays read-only anyway
        os.close(handle)


def mount_proc():
    """A /proc of the program's own pid namespace (best effort: refused where /proc is partly hidden)."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
        return True
    except OSError:
        return False


def hide_key_lists():
    """/proc/keys lists the descriptions of the invoking user's keys (same host uid): cover it and
    /proc/key-users with /dev/null (best effort; payloads are out of reach anyway, keyctl is denied)."""
    for path in ("/proc/keys", "/proc/key-users"):
        try:
            _mount("/dev/null", path, None, MS_BIND, None)
        except OSError:
            pass


def _capability_structs():
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    return Header(0x20080522, 0), (Data * 2)()


def _last_capability():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 63


_CAPSET_ARGS = _capability_structs()  # built once: defining ctypes classes per program costs more than capset
_LAST_CAPABILITY = _last_capability()


def drop_capabilities():
    """Empty bounding, permitted, effective and inheritable sets (ambient follows permitted)."""
    for capability in range(_LAST_CAPABILITY + 1):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(capability), 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header, empty = _CAPSET_ARGS
    _check(_libc.capset(ctypes.byref(header), empty), "capset")


def _filter_program(arch_id, numbers):
    """Classic BPF: wrong architecture -> kill; x32 or a denied call -> EPERM; clone with a namespace
    flag -> EPERM; clone3 -> ENOSYS; anything else allowed."""
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    denied = [n for name, n in numbers.items() if name not in ("clone", "clone3")]
    code = [(ld_abs, 0, 0, 4), (jeq, 1, 0, arch_id), (ret, 0, 0, kill), (ld_abs, 0, 0, 0)]
    # After the checks below come: [ret allow, ret eperm, ret enosys, clone-flags check...]
    checks = (
        [("x32", jge, 0x40000000, "eperm")]
        + [(n, jeq, n, "eperm") for n in denied]
        + [("clone3", jeq, numbers["clone3"], "enosys"), ("clone", jeq, numbers["clone"], "clone")]
    )
    tail = {"allow": 0, "eperm": 1, "enosys": 2, "clone": 3}
    for index, (_, op, value, target) in enumerate(checks):
        remaining = len(checks) - index - 1
        code.append((op, remaining + tail[target], 0, value))
    code += [
        (ret, 0, 0, allow),
        (ret, 0, 0, eperm),
        (ret, 0, 0, enosys),
        (ld_abs, 0, 0, 16),
        (jset, 0, 1, CLONE_NAMESPACE_FLAGS),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    return code


_PREPARED_FILTER = []  # (SockFprog, instructions): built once in the zygote, inherited by every fork


def prepare_seccomp():
    """Build the filter once (ctypes classes and arrays cost more than installing it)."""
    if _PREPARED_FILTER or ARCH not in _SYSCALLS:
        return

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    code = _filter_program(*_SYSCALLS[ARCH])
    instructions = (SockFilter * len(code))(*[SockFilter(*row) for row in code])
    _PREPARED_FILTER.extend([SockFprog(len(code), instructions), instructions])


def install_seccomp():
    """NO_NEW_PRIVS, then the filter. False where this architecture's syscall table is not known here."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
    if ARCH not in _SYSCALLS:
        return False
    prepare_seccomp()
    _prctl(PR_SET_SECCOMP, 2, ctypes.addressof(_PREPARED_FILTER[0]), what="PR_SET_SECCOMP")
    return True
