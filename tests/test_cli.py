"""The CLI skeleton: help without torch, version, one-line errors, --debug tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from phi_hpc import __version__
from tests.conftest import REPO_ROOT

LIGHT_COMMANDS = [["--help"], ["--version"]]


def _imported_modules(args: list[str]) -> set[str]:
    code = (
        "import sys, json\n"
        "from phi_hpc.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    line = [text for text in out.stdout.splitlines() if text.startswith("MODULES=")][-1]
    return set(json.loads(line[len("MODULES=") :]))


def test_help_and_version_do_not_import_heavy_modules():
    for args in LIGHT_COMMANDS:
        modules = _imported_modules(args)
        heavy = {m for m in modules if m.split(".")[0] in {"torch", "deepspeed", "transformers", "tokenizers"}}
        assert not heavy, f"phi-hpc {' '.join(args)} imported {sorted(heavy)[:5]}"


def test_every_subcommand_help_is_light():
    from phi_hpc.cli import cli

    for name in cli.commands:
        modules = _imported_modules([name, "--help"])
        heavy = {m for m in modules if m.split(".")[0] in {"torch", "deepspeed"}}
        assert not heavy, f"phi-hpc {name} --help imported {sorted(heavy)[:5]}"


def test_version(run_cli):
    proc = run_cli("--version", check=True)
    assert __version__ in proc.stdout


def test_bin_script_runs_from_checkout():
    proc = subprocess.run(
        [str(REPO_ROOT / "bin" / "phi-hpc"), "--help"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PHI_HPC_PYTHON": sys.executable},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prepare" in proc.stdout or "Usage" in proc.stdout


def test_usage_error_is_one_line_and_debug_shows_traceback(run_cli, tmp_path):
    from phi_hpc.cli import cli

    if "prepare" not in cli.commands:  # the first command with a config; present once prepare lands
        import pytest

        pytest.fail("prepare command is missing")
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_key: 1\n")
    proc = run_cli("prepare", str(tmp_path), "--tokenizer", "x", "-o", str(tmp_path / "o"), "--config", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no_such_key" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(
        "--debug", "prepare", str(tmp_path), "--tokenizer", "x", "-o", str(tmp_path / "o"), "--config", str(bad)
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr
