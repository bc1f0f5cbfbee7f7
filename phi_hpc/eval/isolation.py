"""Which isolation a sandbox worker gets, whether it works here, and the command that starts it.

Levels (``--isolation``); ``bwrap`` is the default and is *required*: when bubblewrap cannot start,
``require_isolation`` stops the command before any program runs, with bubblewrap's own reason and the
fixes. A weaker level runs only when chosen explicitly, and puts a loud ``warning`` into every result
(``ISOLATION_WARNINGS``).

``bwrap``    new pid, net, ipc, uts namespaces; the root filesystem is an empty tmpfs holding read-only
             binds of /usr, a minimal /etc (``ETC_ENTRIES``) and the Python installation only (no home,
             project, run folders); private /tmp and /dev/shm, wiped after every program; dies with its
             parent. The interpreter's folders (venv, base prefix, real folder of a symlinked executable)
             are bound after the private /tmp, so a venv under /tmp, $HOME, /opt or a conda prefix stays
             visible. The project itself is not bound: the zygote's code comes over its stdin
             (``worker.ZYGOTE_PARTS``).
``unshare``  pid/net/ipc/uts/mount namespaces via util-linux ``unshare``; the host filesystem is visible.
``rlimits``  resource limits and a separate uid (when root) only.
On the host-filesystem levels as root, an interpreter in a folder other uids cannot enter (pyenv in
/root) is re-exposed to the programs' uid in a private mount namespace (``hidden_ancestors`` here,
``zygote_confinement._expose_interpreter`` inside).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from phi_hpc.errors import PhiError, UsageError

ISOLATION_LEVELS = ("bwrap", "unshare", "rlimits")
# What programs see of /etc: the dynamic linker's cache and config, time zone, name-service basics
# without any account database, MIME and locale tables, and Debian's per-Python config folder.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "hosts",
    "protocols",
    "services",
    "mime.types",
    "locale.alias",
    "os-release",
    f"python3.{sys.version_info.minor}",
    "ssl/openssl.cnf",
)
ZYGOTE_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER")


def python_roots() -> list[str]:
    """Folders the interpreter needs, de-nested: its prefixes (a venv and the Python it was made from),
    the real folder of the executable (symlinked interpreters), and any site folder outside them."""
    import site
    import sysconfig

    paths = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        getattr(sys, "base_exec_prefix", sys.exec_prefix),
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.abspath(sys.executable)),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
    ]
    paths += [p for p in site.getsitepackages() if os.path.isdir(p)]
    candidates = {os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths}
    roots: list[str] = []
    for path in sorted(candidates, key=len):
        if not os.path.isdir(path) or path in ("/", "/usr", "/etc") or path.startswith(("/usr/", "/etc/")):
            continue
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        roots.append(path)
    return roots


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b"]``."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def bwrap_command(inner: list[str], tmp_bytes: int = 256 << 20) -> list[str]:
    command = [
        "bwrap",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]
    if os.getuid() != 0:
        command.append("--unshare-user")
    else:  # the zygote keeps only what it needs to hand programs another uid and clean up after them
        command += ["--cap-drop", "ALL"]
        for capability in ZYGOTE_CAPABILITIES:
            command += ["--cap-add", capability]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_ENTRIES:  # a minimal /etc: no passwd, shadow, hostname, ssh or site secrets
        path = "/etc/" + name
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            command += ["--ro-bind", path, path]
    # tmpfs lives in RAM: sized, or many files each under RLIMIT_FSIZE could fill the host's memory.
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--size",
        str(64 << 20),
        "--tmpfs",
        "/dev/shm",
    ]  # multiprocessing needs it
    # The interpreter is bound after the private /tmp and /dev/shm, so a venv under /tmp stays visible.
    made = {"/tmp", "/dev", "/dev/shm", "/proc"}
    for root in python_roots():
        for folder in _ancestors(root):
            if folder not in made:
                made.add(folder)
                command += ["--perms", "0755", "--dir", folder]
        command += ["--ro-bind", root, root]
    return command + ["--chdir", "/tmp", "--clearenv"] + inner


def unshare_command(inner: list[str]) -> list[str]:
    # --mount: a private mount namespace, where the zygote can re-expose an interpreter in a private
    # folder (root's home) to the programs' uid (see ``hidden_ancestors``).
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net", "--ipc", "--uts"] + inner


def hidden_ancestors() -> dict[str, list[str]]:
    """For the host-filesystem levels as root (the zygote then takes a private mount namespace): the
    highest folder above each interpreter root that other uids cannot enter (e.g. ``/root``), with the
    roots below it. The programs' uid could not import from there (30/164 HumanEval references failed
    with ``No module named 'typing'``)."""
    plan: dict[str, list[str]] = {}
    for root in python_roots():
        for folder in _ancestors(root) + [root]:
            if not os.stat(folder).st_mode & 0o001:
                plan.setdefault(folder, []).append(root)
                break
    return plan


def _probe(command: list[str]) -> str | None:
    """None when ``command`` ran fine, else its own reason (the last line of its stderr)."""
    try:
        proc = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30, env={}
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


@functools.cache
def isolation_problem(level: str) -> str | None:
    """None when ``level`` really works here (found by starting an interpreter inside it), else why not."""
    probe = [sys.executable, "-I", "-S", "-c", "pass"]
    if level in ("bwrap", "unshare"):
        tool = "bwrap" if level == "bwrap" else "unshare"
        if not shutil.which(tool):
            return f"{tool} is not on PATH"
        return _probe(bwrap_command(probe) if level == "bwrap" else unshare_command(probe))
    return None


def isolation_available(level: str) -> bool:
    return isolation_problem(level) is None


def detect_isolation() -> str:
    """The best isolation this machine allows (informational: the default is always ``bwrap``)."""
    return next((level for level in ISOLATION_LEVELS if isolation_available(level)), "rlimits")


BWRAP_FIXES = (
    "install bubblewrap (apt-get install bubblewrap / dnf install bubblewrap), allow unprivileged "
    "user namespaces (sysctl -w kernel.unprivileged_userns_clone=1, or on Ubuntu "
    "kernel.apparmor_restrict_unprivileged_userns=0), or choose a weaker level explicitly with "
    "--isolation unshare|rlimits"
)


def require_isolation(level: str | None) -> str:
    """The level to use: ``bwrap`` unless one was chosen. Never falls back silently: a level that cannot
    start is a one-line error with the tool's own reason, raised before any program runs."""
    if level is not None and level not in ISOLATION_LEVELS:
        raise UsageError(f"unknown isolation {level!r}", f"use one of {', '.join(ISOLATION_LEVELS)}")
    chosen = level or "bwrap"
    problem = isolation_problem(chosen)
    if problem is None:
        return chosen
    if chosen == "bwrap":
        raise PhiError(f"the sandbox cannot start: bubblewrap failed: {problem}", BWRAP_FIXES)
    raise UsageError(
        f"--isolation {chosen} does not work on this machine: {problem}",
        "leave --isolation out to use bubblewrap (full isolation), or choose another level",
    )


ISOLATION_WARNINGS = {
    "bwrap": None,
    "unshare": "WARNING: --isolation unshare: programs ran with pid/net namespaces and rlimits but "
    "could see the host filesystem (bubblewrap gives full isolation)",
    "rlimits": "WARNING: --isolation rlimits: programs ran with resource limits only and could reach the "
    "network and your files (bubblewrap gives full isolation)",
}
