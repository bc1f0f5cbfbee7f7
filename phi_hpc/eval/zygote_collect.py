"""Watching a running program and judging it: output, memory of its process tree, exit, verdict.

It runs INSIDE the sandbox as part of the zygote (``worker.ZYGOTE_PARTS``: one namespace, stdlib
only), never imported on the host. ``_watch`` collects the program's output (head and tail kept
within the limit) and its result pipe until it ends, its time is up or its processes together hold
too much memory; ``_verdict`` turns that into the reply (passed only with the run's token and exit
status 0, see ``zygote_harness``).
"""

import os
import select
import signal
import time

if False:  # for readers and linters only: names of the parts that run before this one (same namespace)
    from phi_hpc.eval.zygote_cleanup import PREPARED, _leave_exiting, _wait_status, kill_program
    from phi_hpc.eval.zygote_protocol import NAMESPACES, NSPID_DEPTH


MEMORY_POLL_S = 0.05  # how often the resident memory of a program's whole process tree is summed
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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
    return {
        "result": bytes(result),
        "exit_status": exit_status,
        "timed_out": timed_out,
        "over_memory": over_memory and tree_memory_limit,
        "output": output.text(),
    }


def _verdict(token, started, result, exit_status, timed_out, over_memory, output):
    reply = {"duration": round(time.monotonic() - started, 4), "output": output, "exit_code": None, "signal": None}
    if os.WIFEXITED(exit_status):
        reply["exit_code"] = os.WEXITSTATUS(exit_status)
    elif os.WIFSIGNALED(exit_status):
        reply["signal"] = _signal_name(os.WTERMSIG(exit_status))
    if over_memory:
        return dict(
            reply,
            status="error",
            signal="SIGKILL",
            error=f"MemoryError: the program's processes together used more than {over_memory >> 20} MiB",
        )
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
    return dict(reply, status="failed", error=f"exited with code {reply['exit_code']} before the tests finished")
