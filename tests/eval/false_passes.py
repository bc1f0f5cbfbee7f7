"""Issue 17's red-team attempts: completions that try to score "passed" without a right answer, or to
reach what is not theirs (the zygote, keyrings, state for the next program, memory the limits miss).

Plain Python (no pytest), shared by ``test_false_passes.py`` (root) and ``install_case.py`` (an
ordinary user). Wrong-answer attempts use real HumanEval/MBPP problems through ``Problem.program``;
"reach" attempts define a right ``add`` and assert in their tests that the attack worked, so they can
only pass by breaking out. Syscalls are tried from a child interpreter (``CHILD``): ctypes is refused
inside the harness's own process, so the seccomp filter, not the audit hook, is what stops them there.
"""

from __future__ import annotations

import textwrap

from phi_hpc.eval.sandbox import Program

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\n"
# Runs code in a fresh interpreter (no audit hook there) and returns its last stdout line.
CHILD = textwrap.dedent("""
    import subprocess, sys
    def child(code):
        done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=30)
        return (done.stdout.strip().splitlines() or [""])[-1] + done.stderr[-300:]
    """)
# The zygotes' pids, wherever this /proc shows them (their command line carries the settings).
# The zygote (and the process between it and the program): their command line carries the settings,
# and they lie outside the program's pid namespace (one NSpid entry; pid 1 is the program itself where
# it has a /proc of its own).
ZYGOTES = (
    "import os\ndef zygotes():\n    for pid in os.listdir('/proc'):\n        try:\n"
    "            status = open(f'/proc/{pid}/status').read()\n"
    "            nspid = [l for l in status.splitlines() if l.startswith('NSpid:')][0].split()[1:]\n"
    "            if (pid.isdigit() and pid not in ('1', os.readlink('/proc/self')) and len(nspid) == 1\n"
    "                    and b'work_root' in open(f'/proc/{pid}/cmdline', 'rb').read()):\n"
    "                yield pid\n        except (OSError, ValueError, IndexError):\n            pass\n"
)
SYSCALL = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
TRACER = textwrap.dedent("""
    def _skip(frame, event, arg):
        if event == "line" and frame.f_code.co_name == "check":
            last = max(line for _, _, line in frame.f_code.co_lines() if line)
            if frame.f_lineno < last:
                frame.f_lineno = last
        return _skip
    """)


def wrong_answer_attempts(problems: dict) -> dict[str, Program]:
    """Wrong answers dressed with a trick that made them pass in one shared namespace."""
    he0, he2, he32 = problems["HumanEval/0"], problems["HumanEval/2"], problems["HumanEval/32"]
    mbpp = problems["Mbpp/11"]  # remove_Occ
    del_check = "    return None\nclass _S:\n    def __del__(self): globals()['check'] = lambda c: None\ncheck = _S()\n"
    attempts = {
        "check_rebound_by_del_he0": he0.program(del_check),
        "check_rebound_by_del_he2": he2.program(del_check),
        "global_abs_shadows_builtin": he2.program("    return 0.5\nabs = lambda x: 0\n"),
        "builtins_dict_patched": he2.program("    return 0.5\n__builtins__['abs'] = lambda x: 0\n"),
        "builtins_module_patched": he2.program("    return 0.5\nimport builtins\nbuiltins.abs = lambda x: 0\n"),
        "patched_math_fabs": he32.program("    return 0.0\nimport math\nmath.fabs = lambda x: 0\n"),
        "fake_math_module": he32.program(
            "    return 0.0\nimport sys, types\nm = types.ModuleType('math')\n"
            "m.fabs = lambda x: 0\nsys.modules['math'] = m\nmath = m\n"
        ),
        "redefined_prompt_helper_poly": he32.program("    return 0.0\ndef poly(xs, x):\n    return 0\n"),
        "thread_repatches_builtins": he2.program(
            "    return 0.5\nimport threading, builtins, time\ndef _loop():\n    while True:\n"
            "        builtins.abs = lambda x: 0\n        time.sleep(0.001)\n"
            "threading.Thread(target=_loop, daemon=True).start()\n"
        ),
        "gc_callback_installs_tracer": he2.program(
            "    return 0.5\nimport gc, sys\n"
            + TRACER
            + "gc.callbacks.append(lambda phase, info: sys.settrace(_skip))\n"
            "gc.collect()\n"
        ),
        "settrace_from_the_candidate": he2.program(
            "    import sys\n" + textwrap.indent(TRACER, "    ") + "    sys.settrace(_skip)\n"
            "    sys._getframe(1).f_trace = _skip\n    return 0.5\n"
        ),
        "sys_monitoring_jumps": he2.program(
            "    return 0.5\nimport sys\nmon = sys.monitoring\nmon.use_tool_id(3, 'x')\n"
            "mon.register_callback(3, mon.events.LINE, lambda code, line: mon.DISABLE)\n"
            "mon.set_events(3, mon.events.LINE)\n"
        ),
        "ctypes_sets_a_c_tracer": he2.program(
            "    return 0.5\nimport ctypes\nctypes.pythonapi.PyEval_SetTrace(None, None)\n"
        ),
        "audit_hook_installs_tracer": he2.program(
            "    return 0.5\nimport sys\n"
            + TRACER
            + "sys.addaudithook(lambda e, a: e == 'exec' and sys.settrace(_skip))\n"
        ),
        "threading_settrace_for_new_threads": he2.program(
            "    return 0.5\nimport threading\n" + TRACER + "threading.settrace(_skip)\n"
        ),
        "mbpp_tracer_top_level": mbpp.program(
            "def remove_Occ(s, ch):\n    return s\nimport sys\n"
            + TRACER.replace("'check'", "'<module>'").replace('"check"', '"<module>"')
            + "sys.settrace(_skip)\n"
        ),
        "mbpp_thread_exits_during_tests": mbpp.program(
            "def remove_Occ(s, ch):\n    return s\nimport threading, os, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(0))).start()\n"
        ),
        "mbpp_builtin_named_answer_shadows": problems["Mbpp/126"].program("def sum(a, b):\n    return 6\n"),
        "mbpp_helper_object_with_del": mbpp.program(
            "def remove_Occ(s, ch):\n    return s\nimport builtins\nclass _S:\n"
            "    def __del__(self): builtins.AssertionError = type('Nope', (Exception,), {})\nkeep = _S()\n"
        ),
    }
    return attempts


def reach_attempts(planted_key_id: int | None) -> dict[str, Program]:
    """Attempts on the zygote, keyrings, the next program and memory; each asserts its own success."""
    key = planted_key_id if planted_key_id is not None else 0
    programs = {
        "forge_reply_through_proc_fd": CHILD
        + f"ZYGOTES = {ZYGOTES!r}\n"
        + textwrap.dedent("""
            forged = child(ZYGOTES + '''
            import os, json, struct
            body = json.dumps({"status": "passed", "error": None, "duration": 0.0, "output": ""}).encode()
            done = 0
            for pid in zygotes():
                    try:
                        fd = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY)
                        os.write(fd, struct.pack(">I", len(body)) + body)
                        done += 1
                    except OSError:
                        pass
            print(done)
            ''')
            """)
        + ADD,
        "read_zygote_memory": CHILD
        + f"ZYGOTES = {ZYGOTES!r}\n"
        + textwrap.dedent("""
            opened = child(ZYGOTES + '''
            import os
            n = 0
            for pid in zygotes():
                    try:
                        open(f"/proc/{pid}/mem", "rb").close()
                        n += 1
                    except OSError:
                        pass
            print(n)
            ''')
            """)
        + ADD,
        "keyring_read_planted_key": CHILD + f"stolen = child({SYSCALL!r} + 'buf = ctypes.create_string_buffer(256)\\n"
        f"n = libc.syscall(250, 11, {key}, buf, 256)\\nprint(buf.raw[:max(n, 0)])')\n" + ADD,
        "keyring_revoke_and_update": CHILD + f"changed = child({SYSCALL!r} + 'a = libc.syscall(250, 3, {key})\\n"
        f'b = libc.syscall(250, 2, {key}, b"pwned", 5)\\nprint(a, b)\')\n' + ADD,
        "keyring_search_and_add": CHILD + f'found = child({SYSCALL!r} + \'print(libc.syscall(250, 10, -3, b"user", '
        f'b"phi-hpc-test-key", 0), libc.syscall(248, b"user", b"planted", b"x", 1, -4),'
        f' open("/proc/keys").read().count("phi-hpc"))\')\n' + ADD,
        "sysv_ipc_left_behind": ADD + "import subprocess\nipc = [subprocess.run(['ipcmk', *args], capture_output=True)"
        ".returncode for args in (['-M', '4096'], ['-Q'], ['-S', '1'])]\n",
        "memfd_outside_the_limits": CHILD + f'made = child({SYSCALL!r} + \'fd = os.memfd_create("x")\\n'
        "os.ftruncate(fd, 1 << 30)\\nprint(fd)')\n" + ADD,
        "nested_userns_tmpfs": ADD + "import subprocess\nnested = subprocess.run(['unshare', '-Urm', 'sh', '-c', "
        "'mount -t tmpfs none /tmp && echo ok'], capture_output=True, text=True).stdout\n",
        "io_uring_setup": CHILD + f"ring = child({SYSCALL!r} + 'p = ctypes.create_string_buffer(120)\\n"
        "print(libc.syscall(425, 4, p), ctypes.get_errno())')\n" + ADD,
        "bpf_and_userfaultfd": CHILD + f"calls = child({SYSCALL!r} + 'print(libc.syscall(321, 0, None, 0), "
        "libc.syscall(323, 0))')\n" + ADD,
        "clone_new_user_namespace": CHILD + f"cloned = child({SYSCALL!r} + 'print(libc.syscall(56, 0x10000000 | 17, "
        "0, 0, 0, 0))')\n" + ADD,
        "inode_bomb": ADD + "made = 0\nfor i in range(200000):\n    open(f'/tmp/i{i}', 'w').close()\n    made += 1\n",
        "deep_tree": ADD + "import os\npath = '/tmp'\nfor i in range(1000):\n    path += '/d'\n    os.mkdir(path)\n"
        "os.chmod('/tmp/d', 0)\nos.makedirs('deep/' + 'e/' * 400)\nleft = True\n",
        "dev_shm_and_tmp_left_behind": ADD
        + "open('/dev/shm/left', 'w').write('x')\nopen('/tmp/left', 'w').write('x')\n"
        "left = True\n",
        "all_of_etc_visible": ADD + "import os\netc = os.listdir('/etc')\n",
        "kill_everything_in_reach": ADD + "import os, signal\nfor pid in range(2, 4 << 15):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "os.kill(-1, signal.SIGKILL)\nkilled = True\n",
    }
    tests = {
        "forge_reply_through_proc_fd": "assert int(forged.split()[0]) > 0, forged\n",
        "read_zygote_memory": "assert int(opened.split()[0]) > 0, opened\n",
        "keyring_read_planted_key": "assert b'phi-hpc-secret' in eval(stolen.split(chr(10))[0]), stolen\n",
        "keyring_revoke_and_update": "assert changed.split()[:2] != ['-1', '-1'], changed\n",
        "keyring_search_and_add": "assert not found.startswith('-1 -1 0'), found\n",
        "sysv_ipc_left_behind": "assert ipc == [0, 0, 0], ipc\n",
        "memfd_outside_the_limits": "assert int(made.split()[0]) >= 0, made\n",
        "nested_userns_tmpfs": "assert nested.strip() == 'ok', nested\n",
        "io_uring_setup": "assert int(ring.split()[0]) >= 0, ring\n",
        "bpf_and_userfaultfd": "assert '-1 -1' not in calls, calls\n",
        "clone_new_user_namespace": "assert int(cloned.split()[0]) >= 0, cloned\n",
        "inode_bomb": "assert made == 200000\n",
        "deep_tree": "assert left\n" + "assert False, 'the tree is the attack: on the next program'\n",
        "dev_shm_and_tmp_left_behind": "assert False, 'the files are the attack: on the next program'\n",
        "all_of_etc_visible": "assert 'shadow' in etc or 'passwd' in etc and 'hostname' in etc, etc\n",
        "kill_everything_in_reach": "assert False, 'the kill is the attack: on the next program'\n",
    }
    return {name: Program(solution=code, tests=ADD_TESTS + tests[name]) for name, code in programs.items()}


def clean_world_check() -> Program:
    """A right answer that also checks that nothing of the previous program is left where it could see it."""
    tests = textwrap.dedent("""
        import os, sys
        kept = {p.split('/')[2] for p in (sys.prefix, sys.base_prefix) if p.startswith(('/tmp/', '/dev/shm/'))}
        assert set(os.listdir('/tmp')) <= kept, os.listdir('/tmp')
        assert set(os.listdir('/dev/shm')) <= kept, os.listdir('/dev/shm')
        assert os.listdir('.') == [] or os.getcwd() == '/tmp', os.listdir('.')
        for kind in ('shm', 'msg', 'sem'):
            assert len(open(f'/proc/sysvipc/{kind}').read().strip().splitlines()) <= 1, kind
        """)
    return Program(solution=ADD, tests=ADD_TESTS + tests)


def plant_key() -> tuple[int, bytes]:
    """A user key in the caller's own session keyring, as Kerberos would leave one (x86_64 numbers)."""
    import ctypes
    import secrets

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    payload = b"phi-hpc-secret-" + secrets.token_hex(8).encode()
    key = libc.syscall(248, b"user", b"phi-hpc-test-key", payload, len(payload), -3)  # add_key, @s
    if key < 0:
        raise OSError(ctypes.get_errno(), "add_key to the session keyring failed")
    return key, payload


def read_key(key: int) -> bytes | None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buffer = ctypes.create_string_buffer(256)
    size = libc.syscall(250, 11, key, buffer, 256)  # keyctl(KEYCTL_READ)
    return buffer.raw[:size] if size >= 0 else None


def unlink_key(key: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(250, 9, key, -3)  # keyctl(KEYCTL_UNLINK, key, @s)
