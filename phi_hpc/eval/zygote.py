"""The per-worker sandbox server: one long-lived interpreter that forks a fresh process per program.

This part runs INSIDE the sandbox (bubblewrap, unshare, or bare), started once per worker as
``python -I -c <worker.ZYGOTE_BOOT> <json settings>``; the host compiles ``worker.ZYGOTE_PARTS``
once and sends them over its stdin, and the boot runs them in order in one namespace, this one last.
Paying for namespaces and interpreter start once per worker instead of once per program is what
makes the harness fast; forking per program is what keeps programs from seeing each other. Every
part is stdlib-only on purpose: the project is not visible in there.

The parts, in the order they run:

- ``confine.py``: the namespace, capability, keyring and seccomp calls;
- ``zygote_protocol.py``: the settings from the host, facts probed at start, message framing;
- ``zygote_harness.py``: what runs in the program's own process (solution, tests in a fresh
  namespace, the token that proves a pass, and what an in-process harness cannot stop);
- ``zygote_confinement.py``: setting up the worker once and each program before its request;
- ``zygote_cleanup.py``: killing, reaping and wiping after a program, and the cleanliness check;
- ``zygote_collect.py``: watching a program (output, result pipe, memory) and the verdict;
- this file: the loop (``main``), ``prepare`` and ``run_one``.

Per program (``prepare``, ``zygote_confinement._become_program``): fork the program's process
straight into a fresh pid namespace (``confine.fork_into_new_pid_namespace``: its pid 1), which takes
a fresh session keyring, new IPC and mount namespaces with a fresh capped /tmp and /dev/shm, drops
every capability and installs the seccomp filter. This is done for the *next* program while the
current one runs, so it waits for its request already confined. One fork per program and no
per-program user namespace: the earlier design's middle process (a second fork, a user namespace
and its uid maps per program) cost about half of the per-program time
(docs/benchmarks/eval_exec.md). The zygote itself is non-dumpable: a program of the same host uid
cannot open its /proc/<pid>/mem or fd/ (the reply pipe), cannot see or signal it from its own pid
namespace, and holds no capability in the user namespace they share.
"""

import json
import os
import struct
import sys
import time

if False:  # for readers and linters only: names of the parts that run before this one (same namespace)
    from phi_hpc.eval.confine import fork_into_new_pid_namespace, seccomp_supported, set_dumpable
    from phi_hpc.eval.zygote_cleanup import (
        PREPARED,
        _reap_strays,
        _remove_tree,
        _wait_until_alone,
        _wipe_private_tmp,
        _world_is_clean,
    )
    from phi_hpc.eval.zygote_collect import _own_nspid_depth, _verdict, _watch
    from phi_hpc.eval.zygote_confinement import (
        _become_program,
        _enter_worker_namespaces,
        _expose_interpreter,
        _prepare_work_dir,
        _probe_namespaces,
        _probe_program_proc,
    )
    from phi_hpc.eval.zygote_harness import _audit_hook, _prepare_world
    from phi_hpc.eval.zygote_protocol import NAMESPACES, WORK_ROOT, _error_line, _exit, receive, send


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
    return {
        "pid": pid,
        "pidfd": os.pidfd_open(pid),
        "token": token,
        "work_dir": work_dir,
        "result_r": result_r,
        "output_r": output_r,
        "request_w": request_w,
    }


def run_one(request, ready, serial):
    """Hand the request to the prepared process, watch it, clean up, judge."""
    started = time.monotonic()
    data = json.dumps(request).encode()
    try:
        view = memoryview(struct.pack(">I", len(data)) + data)
        while view:
            view = view[os.write(ready["request_w"], view) :]
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
    send(
        {
            "ready": True,
            "uid": os.getuid(),
            "pid": os.getpid(),
            "namespaces": NAMESPACES,
            "seccomp": seccomp_supported(),
        }
    )
    serial = 1
    ready = prepare(serial)
    while True:
        request = receive()
        if request is None:
            return
        try:
            reply, ready = run_one(request, ready, serial)
        except Exception as exc:  # noqa: BLE001 - report, and have the host replace us
            reply = {
                "status": "error",
                "error": f"sandbox failure: {_error_line(exc)}",
                "duration": 0.0,
                "output": "",
                "exit_code": None,
                "signal": None,
                "replace": _error_line(exc),
            }
            send(dict(reply, nonce=request.get("nonce")))
            return
        serial += 1
        reply["nonce"] = request.get("nonce")
        send(reply)


main()
