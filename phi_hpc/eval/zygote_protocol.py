"""The zygote's settings, start-time facts and framing: what every other part of the zygote reads.

It runs INSIDE the sandbox as part of the zygote (``worker.ZYGOTE_PARTS``: one namespace, stdlib
only), never imported on the host. The host starts the zygote as ``python -I -c <worker.ZYGOTE_BOOT>
<json settings>``; the settings below come from that argument. Then, on fds 0/1 (the host's pipes),
each message is a 4-byte big-endian length and a JSON object. Request: ``{"nonce", "solution",
"tests", "setup", "entry_point", "expose", "timeout", "limits", "output_limit", ...}``; reply: the
outcome, carrying the request's nonce (the host rejects any other).
"""

import json
import os
import struct
import sys

SETTINGS = json.loads(sys.argv[1])
RUN_UID = SETTINGS["uid"]  # None: not root; programs run as our own host uid (in their own user namespace)
IN_PID_NAMESPACE = SETTINGS["pid_namespace"]  # we are not pid 1, so kill(-1) spares us and init
WORK_ROOT = SETTINGS["work_root"]
PRIVATE_TMP = SETTINGS["private_tmp"]  # /tmp is our own tmpfs (bubblewrap)
KEEP = frozenset(SETTINGS.get("keep", ()))  # the interpreter's folders bound into /tmp: never wiped
EXPOSE = SETTINGS.get("expose", {})  # private folder -> interpreter roots under it (root, host filesystem)
TMP_BYTES, SHM_BYTES, TMP_INODES = SETTINGS["tmp_bytes"], SETTINGS["shm_bytes"], SETTINGS["tmp_inodes"]
NAMESPACES = False  # per-program namespaces work here (probed at start)
NSPID_DEPTH = 1  # entries of our own NSpid line (see tree_resident_bytes)
PROGRAM_PROC = False  # a program can mount a /proc of its own here (probed once, _probe_program_proc)

# Taken before any program runs, so a program replacing sys.settrace or os._exit changes nothing here.
_write, _exit, _gettrace, _getprofile = os.write, os._exit, sys.gettrace, sys.getprofile


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
        view = view[os.write(1, view) :]


def _error_line(exc):
    """The last line of a traceback ("NameError: name 'x' is not defined"), robust to hostile __str__."""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - the exception object is the program's, it may do anything
        text = "<unprintable>"
    name = type(exc).__name__
    line = f"{name}: {text}" if text else name
    return line.splitlines()[-1][:500] if line.strip() else name
