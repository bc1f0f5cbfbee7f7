"""The run folder: everything a submission leaves behind, readable from a login node without Slurm.

Layout (``RUN`` is the training run folder, so the trainer's files sit beside the launch records; the
names are :class:`phi_hpc.run_layout.RunLayout`'s)::

    RUN/run.json                 what was submitted: kind, executor, profile, git commit, jobs (ids, deps, argv)
    RUN/config.yaml              the resolved config the jobs run (the trainer rewrites the same content)
    RUN/attempts/<job id>.jsonl  one line per attempt start/end of that job (or array element), written by
                                 its task 0 only (requeues and their progress are counted here)
    RUN/code/<hash>/             the phi_hpc package (and configs/) as submitted: jobs and their requeues run it
    RUN/logs/<job>/<id>/attempt-<k>/rank<r>.out|.err   each attempt's output, per rank
    RUN/submitit/                submitit's pickles, sbatch scripts and wrapper logs
    RUN/metrics.jsonl, RUN/checkpoints/, RUN/summary.json, RUN/eval/...   written by the jobs themselves

``run.json`` changes only at submission time (atomically). Each job (each array element) appends to
its own attempts file: one writer per file, because ``O_APPEND`` is not atomic between NFS clients,
and array elements on different nodes run at the same time. Readers skip a line being written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.fileio import write_json
from phi_hpc.run_layout import RUN_FILE, RunLayout

INDEX_ENV = "PHI_HPC_RUN_INDEX"


@dataclass
class JobRecord:
    name: str  # "train", "eval-step-20", "prepare-map", ...
    job_id: str
    argv: list[str]  # the phi-hpc arguments every task runs
    executor: str  # "slurm" | "local"
    host: str | None = None  # local executor: the machine whose process ids job_id refers to
    array_size: int | None = None
    depends_on: list[str] = field(default_factory=list)  # job ids (afterok)
    submitted: float = field(default_factory=time.time)


@dataclass
class RunRecord:
    kind: str
    run_dir: str
    executor: str
    profile: dict
    command: list[str]
    git_commit: str | None
    jobs: list[JobRecord] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def job(self, name_or_id: str) -> JobRecord | None:
        """The newest job of that name (a resubmission into the same folder supersedes the older one)."""
        for job in reversed(self.jobs):
            if name_or_id in (job.name, job.job_id):
                return job
        return None


def save_run(record: RunRecord) -> None:
    write_json(RunLayout(record.run_dir).run_record, asdict(record))


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    path = RunLayout(run_dir).run_record
    if not path.is_file():
        raise UsageError(
            f"{run_dir}: not a submitted run (no {RUN_FILE})", "give the run folder printed by `phi-hpc submit`"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    jobs = [JobRecord(**job) for job in data.pop("jobs", [])]
    return RunRecord(**data, jobs=jobs)


def attempts_file(run_dir: str | os.PathLike, job_id: str) -> Path:
    """The attempts file of one job or array element (``123``, ``123_4``): only its task 0 writes it."""
    safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in str(job_id)) or "unknown"
    return RunLayout(run_dir).attempts_dir / f"{safe}.jsonl"


def append_attempt(run_dir: str | os.PathLike, event: dict) -> None:
    """One JSON line, one ``write``, into the file of ``event["job_id"]``, then fsync (another node reads it)."""
    line = (json.dumps({**event, "time": time.time()}, sort_keys=True) + "\n").encode()
    path = attempts_file(run_dir, str(event.get("job_id", "")))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[dict]:
    events = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return events


def read_attempts(run_dir: str | os.PathLike) -> list[dict]:
    """Every job's attempt events, oldest first (the per-job files, and a pre-split ``attempts.jsonl``)."""
    layout = RunLayout(run_dir)
    events = _read_lines(layout.legacy_attempts)
    folder = layout.attempts_dir
    if folder.is_dir():
        for path in sorted(folder.glob("*.jsonl")):
            events += _read_lines(path)
    return sorted(events, key=lambda event: event.get("time", 0.0))


def log_dir(run_dir: str | os.PathLike, job_name: str, job_id: str, restarts: int) -> Path:
    return RunLayout(run_dir).log_dir(job_name, job_id, restarts)


def git_commit(path: Path) -> str | None:
    """The commit of the code being submitted (``+dirty`` when it has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def index_path() -> Path:
    """Where ``status`` without a RUN finds recent submissions (one absolute path per line)."""
    override = os.environ.get(INDEX_ENV)
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "phi-hpc" / "runs.txt"


def remember_run(run_dir: Path) -> None:
    path = index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{Path(run_dir).resolve()}\n")
    except OSError:
        pass  # a read-only home must not block a submission


def recent_runs(limit: int = 5) -> list[Path]:
    path = index_path()
    if not path.is_file():
        return []
    seen: list[Path] = []
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        run = Path(line.strip())
        if line.strip() and run not in seen and RunLayout(run).run_record.is_file():
            seen.append(run)
        if len(seen) == limit:
            break
    return seen
