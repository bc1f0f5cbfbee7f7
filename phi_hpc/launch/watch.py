"""``status``: what a run is doing, read from files and one scheduler query.

Nothing here imports torch (a test checks it): this runs on login nodes, often in a loop. Metrics and
logs are read from the end of their files, so a week-long run answers as fast as a new one. What the
commands on a run share is decided here once: a run's job states (:func:`job_states`, also for
``cancel``), its attempt folders (:func:`attempt_dirs`) and the job ``--job`` names (:func:`pick_job`);
``logs`` (:mod:`phi_hpc.launch.logs`) follows the files these name.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from phi_hpc.constants import SLURM_UNSUCCESSFUL_STATES
from phi_hpc.errors import UsageError
from phi_hpc.fileio import tail_lines
from phi_hpc.launch.jobs import JobState, local_state, slurm_job_state, slurm_states
from phi_hpc.launch.runs import JobRecord, RunRecord, load_run, read_attempts
from phi_hpc.run_layout import RunLayout


def job_states(record: RunRecord, jobs: list[JobRecord], attempts: list[dict]) -> dict[str, JobState]:
    """job id -> state for ``jobs`` of a run: one squeue + one sacct call, completed by the run's records
    (no accounting, purged jobs) and, for local jobs, by their process on their host."""
    slurm_ids = [job.job_id for job in jobs if job.executor == "slurm"]
    answered: list = []
    states = slurm_states(slurm_ids, answered) if slurm_ids else {}
    found = {}
    for job in jobs:
        if job.executor == "slurm":
            found[job.job_id] = slurm_job_state(
                job.job_id, states.get(job.job_id, []), attempts, bool(answered), job.array_size
            )
        else:
            found[job.job_id] = local_state(job.job_id, attempts, job.host)
    return found


def pick_job(record: RunRecord, name: str | None) -> JobRecord:
    """The job ``--job NAME`` names (``logs``, ``cancel``); without a name the training job, else the last
    one submitted."""
    if not record.jobs:
        raise UsageError(f"{record.run_dir}: no jobs were submitted")
    if name:
        job = record.job(name)
        if job is None:
            raise UsageError(f"--job {name}: not a job of this run", f"jobs: {', '.join(j.name for j in record.jobs)}")
        return job
    return record.job("train") or record.jobs[-1]


# ---------------------------------------------------------------------------- reading files from the end
def _recent_metrics(run_dir: Path, lines: int) -> list[dict]:
    """The records of the last ``lines`` lines of RUN/metrics.jsonl; none when the file is damaged
    (``eval curve`` names the line; ``status`` and ``submit`` keep working)."""
    from phi_hpc.errors import PhiError
    from phi_hpc.train.metrics import read_metrics

    try:
        return read_metrics(RunLayout(run_dir).metrics, last=lines)
    except PhiError:
        return []


def latest_metrics(run_dir: Path) -> dict:
    """The newest training-step line of RUN/metrics.jsonl (plus the newest validation loss)."""
    result: dict = {}
    for record in reversed(_recent_metrics(run_dir, 50)):
        if "loss" in record and "step" not in result:
            result.update(step=record.get("step"), loss=record.get("loss"), tokens_per_s=record.get("tokens_per_s"))
        if "val_loss" in record and "val_loss" not in result:
            result["val_loss"] = record["val_loss"]
    return result


def signal_delay_warning(run_dir: Path, signal_delay_s: int, lines: int = 2000) -> str:
    """A warning when the signal comes too late to save: SIGUSR2 arrives ``signal_delay_s`` before the time
    limit, and the trainer first finishes its step, then checkpoints. Measured from the run's own
    metrics (median step time; the longest pause between two steps, i.e. a checkpoint save or a
    validation); "" when they fit, or nothing was measured yet."""
    steps: list[tuple[float, float]] = []
    for record in _recent_metrics(run_dir, lines):
        if "step_time_s" in record and "time" in record:
            steps.append((float(record["time"]), float(record["step_time_s"])))
    if len(steps) < 3:
        return ""
    step_s = sorted(t for _, t in steps)[len(steps) // 2]
    pause_s = max(max(0.0, later - earlier - took) for (earlier, _), (later, took) in zip(steps, steps[1:]))
    if signal_delay_s >= step_s + pause_s:
        return ""
    return (
        f"signal_delay_s={signal_delay_s} is shorter than one step ({step_s:.0f} s) plus one checkpoint save "
        f"(up to {pause_s:.0f} s measured): a time limit may kill the job before its checkpoint is saved; "
        f"use --signal-delay {int(1.5 * (step_s + pause_s)) + 1}"
    )


def attempt_dirs(run_dir: Path, job: JobRecord) -> list[Path]:
    """This job's attempt folders, oldest first (array elements ordered by index, then attempt)."""
    root = RunLayout(run_dir).job_logs(job.name)
    if not root.is_dir():
        return []
    ids = [d for d in root.iterdir() if d.is_dir() and (d.name == job.job_id or d.name.startswith(f"{job.job_id}_"))]

    def order(path: Path) -> tuple:
        index = path.parent.name.partition("_")[2]
        return (int(index) if index.isdigit() else -1, int(path.name.rpartition("-")[2] or 0))

    return sorted((a for d in ids for a in d.glob("attempt-*") if a.is_dir()), key=order)


def last_log_line(run_dir: Path, job: JobRecord) -> str:
    attempts = attempt_dirs(run_dir, job)
    if not attempts:
        return ""
    for suffix in (".out", ".err"):
        for line in reversed(tail_lines(attempts[-1] / f"rank0{suffix}", 20)):
            text = line.strip().replace("\r", "")
            if text and not text.startswith("submitit "):  # submitit's own bookkeeping lines
                return text
    return ""


# ---------------------------------------------------------------------------- status
@dataclass
class JobStatus:
    name: str
    job_id: str
    state: str
    elapsed: str
    requeues: int
    reason: str
    step: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    val_loss: float | None = None
    last_line: str = ""
    scores: str = ""  # eval jobs: "humaneval pass@1 0.512, mbpp pass@1 0.448" once results.json exists


def run_status(run_dir: Path) -> tuple[RunRecord, list[JobStatus]]:
    record = load_run(run_dir)
    attempts = read_attempts(run_dir)
    by_id = job_states(record, record.jobs, attempts)
    names = {job.job_id: job.name for job in record.jobs}
    rows = []
    for job in record.jobs:
        state = by_id[job.job_id]
        rows.append(
            JobStatus(
                job.name,
                job.job_id,
                state.state,
                state.elapsed,
                _requeues(job, attempts),
                _explain(job, state, by_id, names, attempts),
                last_line=last_log_line(run_dir, job),
            )
        )
        if job.argv[:1] == ["train"]:
            metrics = latest_metrics(run_dir)
            for key, value in metrics.items():
                setattr(rows[-1], key, value)
        if job.argv[:2] == ["eval", "run"]:
            rows[-1].scores = eval_scores(job.argv)
    return record, rows


def eval_scores(argv: list[str]) -> str:
    """pass@k of a finished ``eval run`` job, from its ``-o OUT/results.json``."""
    if "-o" not in argv or argv.index("-o") + 1 >= len(argv):
        return ""
    try:
        results = json.loads((Path(argv[argv.index("-o") + 1]) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    parts = []
    for task, summary in sorted((results.get("tasks") or {}).items()):
        parts += [
            f"{task} {key} {value:.3f}"
            for key, value in sorted(summary.items())
            if key.startswith("pass@") and isinstance(value, (int, float))
        ]
    return ", ".join(parts)


def _requeues(job: JobRecord, attempts: list[dict]) -> int:
    mine = [
        e
        for e in attempts
        if e.get("event") == "start"
        and e.get("job") == job.name
        and str(e.get("job_id", "")).split("_")[0] == job.job_id
    ]
    return max((int(e.get("restarts", 0)) for e in mine), default=0)


def _explain(
    job: JobRecord, state: JobState, by_id: dict[str, JobState], names: dict[str, str], attempts: list[dict]
) -> str:
    """Why a job is where it is, in words (the part users otherwise dig out of sacct)."""
    failed_parents = [
        d for d in job.depends_on if d in by_id and by_id[d].state.split()[0] in SLURM_UNSUCCESSFUL_STATES
    ]
    if failed_parents and state.state.split()[0] in ("CANCELLED", "PENDING"):
        parent = failed_parents[0]
        return (
            f"dependency {names.get(parent, parent)} ({parent}) ended {by_id[parent].state}: "
            f"cancelled (afterok + kill-on-invalid-dep)"
        )
    details = [
        e.get("detail")
        for e in attempts
        if e.get("job") == job.name
        and e.get("event") == "end"
        and e.get("detail")
        and str(e.get("job_id", "")).split("_")[0] == job.job_id
    ]
    if job.array_size and state.reason:
        return state.reason  # which elements failed, and how
    if state.state.split()[0] in SLURM_UNSUCCESSFUL_STATES and details:
        return str(details[-1])
    if state.reason:
        return state.reason
    if state.exit_code and state.exit_code not in ("0:0", "0") and state.state.split()[0] in SLURM_UNSUCCESSFUL_STATES:
        return f"exit code {state.exit_code}"
    return ""


def pass_at_1_so_far(run_dir: Path) -> list[dict]:
    """``[{"step": 10, "humaneval": 0.12}, ...]``: every finished evaluation of the run's checkpoints."""
    from phi_hpc.errors import PhiError
    from phi_hpc.eval.curve import collect_evaluations

    try:
        points = collect_evaluations(run_dir)
    except PhiError:
        return []  # a damaged results.json: `eval curve` names it; status keeps working
    return [{"step": p.step, **p.pass_at_1} for p in points if not p.pending and p.pass_at_1]


def _pass_line(scores: list[dict]) -> str:
    parts = [
        f"step {row['step']} "
        + ", ".join(f"{task} {value:.1%}" for task, value in sorted(row.items()) if task != "step")
        for row in scores
    ]
    return "pass@1 so far: " + "; ".join(parts)


def print_status(run_dir: Path, as_json: bool, out: TextIO = sys.stdout) -> None:
    record, rows = run_status(run_dir)
    scores = pass_at_1_so_far(run_dir)
    warning = (
        signal_delay_warning(run_dir, int(record.profile.get("signal_delay_s", 0) or 0))
        if any(job.argv[:1] == ["train"] for job in record.jobs)
        else ""
    )
    if as_json:
        out.write(
            json.dumps(
                {
                    "run_dir": record.run_dir,
                    "kind": record.kind,
                    "executor": record.executor,
                    "jobs": [asdict(row) for row in rows],
                    "pass_at_1": scores,
                    "warnings": [warning] if warning else [],
                },
                indent=2,
            )
            + "\n"
        )
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{record.run_dir}  ({record.kind}, {record.executor})", title_justify="left")
    for column in (
        "job",
        "id",
        "state",
        "elapsed",
        "requeues",
        "step",
        "loss",
        "tok/s",
        "why / scores / last log line",
    ):
        table.add_column(column, overflow="fold" if column.startswith("why") else "ellipsis")
    for row in rows:
        note = row.reason or row.scores or row.last_line
        if row.reason and row.last_line and row.state.split()[0] not in SLURM_UNSUCCESSFUL_STATES:
            note = f"{row.reason}; {row.last_line}"
        table.add_row(
            row.name,
            row.job_id,
            row.state,
            row.elapsed,
            str(row.requeues),
            "" if row.step is None else str(row.step),
            "" if row.loss is None else f"{row.loss:.4f}",
            "" if row.tokens_per_s is None else f"{row.tokens_per_s:,.0f}",
            escape(note[:120]),
        )
    console = Console(file=out, width=max(100, _terminal_width()))
    console.print(table)
    if scores:
        console.print(escape(_pass_line(scores)))
    if warning:
        console.print(escape(f"warning: {warning}"))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def iter_runs(run: str | None) -> Iterator[Path]:
    from phi_hpc.launch.runs import recent_runs

    if run:
        yield Path(run)
        return
    runs = recent_runs()
    if not runs:
        raise UsageError("no submitted runs found", "give a run folder: phi-hpc status RUN")
    yield from runs
