"""The sandbox wherever a real user installs phi-hpc (issue 10, acceptance 3 and 4).

Each case creates a venv (``-m venv --system-site-packages``: seconds, no download), and runs
``install_case.py`` with it, as root or as an ordinary user created here: the hostile suite must score
no pass and leave the host untouched, and every HumanEval and MBPP reference must pass, all in the
default bubblewrap sandbox. These cases need root to create the user and the /opt folder; CI and this
machine run the tests as root, so elsewhere they fail with that reason rather than skip silently.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

USER = "phi-eval-user"


def _others_can_run(path: str) -> bool:
    """Whether a uid with no relation to the file's owner can reach and execute ``path``."""
    path = os.path.realpath(path)
    folders = [p for p in Path(path).parents]
    return all(os.stat(f).st_mode & stat.S_IXOTH for f in folders) and bool(os.stat(path).st_mode & stat.S_IXOTH)


def _base_python_for_others() -> str:
    """The interpreter an ordinary user's venv is made from: ours if others can run it (it may lie in
    root's private home, as with pyenv here), else the system's Python."""
    for candidate in (
        sys.executable,
        f"/usr/bin/python3.{sys.version_info.minor}",
        "/usr/bin/python3",
        shutil.which("python3") or "",
    ):
        if candidate and os.path.exists(candidate) and _others_can_run(candidate):
            return candidate
    pytest.fail("no Python interpreter that an ordinary user may run (install python3 system-wide)")


def _ordinary_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
        return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def case_root():
    if os.getuid() != 0:
        pytest.fail("these cases create a user and an /opt venv, so they must run as root (as CI does)")
    folders = []

    def make(parent: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="phi-hpc-case-", dir=parent))
        os.chmod(folder, 0o755)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("who,where", [("root", "/tmp"), ("user", "/tmp"), ("user", "/opt")])
def test_hostile_suite_and_references_wherever_the_interpreter_lives(who, where, case_root, shared_data):
    folder = case_root(where)
    base = sys.executable if who == "root" else _base_python_for_others()
    venv = folder / "venv"
    subprocess.run(
        [base, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    project = folder / "project"  # stands for the user's project folder: hostile programs aim at it
    project.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "LANG": "C.UTF-8"}
    command = [
        str(venv / "bin" / "python"),
        str(REPO_ROOT / "tests" / "eval" / "install_case.py"),
        str(shared_data),
        str(project),
    ]
    if who == "user":
        user = _ordinary_user()
        os.chown(project, user.pw_uid, user.pw_gid)
        env.update(HOME=user.pw_dir, USER=USER)
        command = ["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *command]
    else:
        env["HOME"] = os.environ.get("HOME", "/root")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=project, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["prefix"] == str(venv) and report["isolation"] == "bwrap", report
    assert report["uid"] == (0 if who == "root" else pwd.getpwnam(USER).pw_uid)
    assert report["problems"] == [], report["problems"]
    assert report["after"] == ["passed", "passed"]
    attempts = report["false_passes"]  # issue 17, acceptance 1-3, as this user
    assert attempts["count"] >= 25 and attempts["passed"] == [], attempts
    assert attempts["not_followed_by_passes"] == [] and attempts["key_intact"], attempts
    assert (report["humaneval"]["passed"], report["humaneval"]["total"]) == (164, 164), report["humaneval"]
    assert (report["mbpp-full"]["passed"], report["mbpp-full"]["total"]) == (974, 974), report["mbpp-full"]


@pytest.mark.parametrize("isolation", ["unshare", "rlimits"])
def test_weaker_levels_as_root_still_pass_the_references(isolation, humaneval_path):
    """Chosen explicitly, a weaker level still works: as root, the programs' uid can import the standard
    library even from an interpreter in root's private home (30/164 failed with ModuleNotFoundError)."""
    from phi_hpc.eval.score import check_references

    rows, summary = check_references("humaneval", humaneval_path, workers=2, isolation=isolation, show_progress=False)
    failures = [(r["task_id"], r["error"]) for r in rows if not r["passed"]]
    assert summary["passed_samples"] == 164, failures[:5]
    assert summary["warning"].startswith(f"WARNING: --isolation {isolation}")


def test_score_stops_when_bubblewrap_cannot_start(run_cli, tmp_path):
    """Acceptance 4: bwrap not on PATH -> one line with the reason and the fixes, non-zero, nothing run."""
    marker = tmp_path / "a-program-ran"
    samples = tmp_path / "samples.jsonl"
    completion = f"    open({str(marker)!r}, 'w').write('x')\n    return False\n"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": completion}) + "\n")
    tools = tmp_path / "bin"  # everything the run could need but bubblewrap
    tools.mkdir()
    os.symlink(shutil.which("unshare"), tools / "unshare")
    proc = run_cli("eval", "score", str(samples), "--task", "humaneval", env={"PATH": str(tools)})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bwrap is not on PATH" in lines[0] and "install bubblewrap" in lines[0]
    assert "unprivileged_userns_clone" in lines[0] and "--isolation" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "samples_results.jsonl").exists()
