"""What runs inside every task of a submitted job (pickled by submitit, executed on the compute node).

A :class:`PhiTask` runs one ``phi-hpc`` command *in-process* (``phi_hpc.cli.main(argv)``) after:

1. exporting the torch.distributed variables derived from Slurm's (:mod:`phi_hpc.distenv`);
2. sending this attempt's stdout/stderr to ``RUN/logs/<job>/<id>/attempt-<k>/rank<r>.out|err``,
   so a requeued job writes new files and the previous attempt's output stays readable;
3. recording the start and end in ``RUN/attempts/<job id>.jsonl`` (task 0 only; one file per job or
   array element, so concurrent elements never append to one shared file).

Preemption: the trainer catches SIGUSR2/SIGTERM, checkpoints and exits with code 75. The task then
asks the controller (``scontrol show job``) whether the job is still RUNNING (a warning signal: task
0 requeues it) or already ending (scancel: stop; an operator's or Slurm's requeue: recorded). Only a
certain answer ends the attempt with exit 0: when ``scontrol`` is missing, fails or times out after
bounded retries, or ``scontrol requeue`` fails, the job ends non-zero and its end record says why,
so that neither a silent COMPLETED nor an ``afterok`` evaluation of a half-trained model can follow.

``max_requeues`` counts attempts that made *no progress* (the run's published checkpoint step did not
move): a weeks-long run survives any number of preemptions as long as each attempt advances, and a
run stuck in a crash-requeue loop fails after ``max_requeues + 1`` attempts without progress. A signal
that lands before the trainer has installed its handler reaches submitit's, which calls
:meth:`PhiTask.checkpoint` and requeues the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from phi_hpc.constants import EXIT_PREEMPTED
from phi_hpc.distenv import DistEnv, detect
from phi_hpc.launch.runs import append_attempt, log_dir, read_attempts

SCONTROL_TRIES = 3
SCONTROL_TIMEOUT_ENV = "PHI_HPC_SCONTROL_TIMEOUT"  # seconds per scontrol call (default 30)
LOCAL_REQUEUE_EXIT = 144  # submitit's local controller restarts all tasks when one exits with this


class StepHook(Protocol):
    """What task 0 of a training job runs as the trainer publishes ``steps`` (``--eval-every``:
    :class:`phi_hpc.launch.evals.EvalPlan`, which submits each step's eval job). A protocol rather than
    an import, since submitting goes through :mod:`phi_hpc.launch.submit`, which builds this task."""

    steps: tuple[int, ...]

    def on_snapshot(self, run_dir: Path) -> Callable[[int], None]: ...


class JobFailed(RuntimeError):
    """The command failed (the job ends FAILED; the message is the last line of the task's log)."""


class SlurmUncertain(RuntimeError):
    """The controller could not be asked (scontrol missing, failing or timing out): never guess."""


@dataclass
class PhiTask:
    run_dir: str
    job_name: str
    argv: list[str]
    max_requeues: int = 3
    wait_for: list[str] = field(default_factory=list)  # local executor only: job ids that must complete first
    eval_plan: StepHook | None = None  # --eval-every: snapshot these steps and submit their evals

    # ------------------------------------------------------------------ entry point
    def __call__(self) -> dict:
        self._requeued_by_submitit = self._outcome_recorded = False  # may come pickled from an earlier attempt
        env = detect()
        env.export()
        restarts = self._restarts(env)
        self._redirect_output(env, restarts)
        print(
            f"[phi-hpc] job {self.job_name} ({env.job_id}) attempt {restarts}, rank {env.rank}/{env.world_size} "
            f"on {_node_name()} (node {env.node_rank}), master {env.master_addr}:{env.master_port}: "
            f"phi-hpc {' '.join(self.argv)}",
            flush=True,
        )
        self._wait_for_dependencies()  # local executor chains; the job counts as pending meanwhile
        if env.rank == 0:
            append_attempt(
                self.run_dir,
                {
                    "event": "start",
                    "job": self.job_name,
                    "job_id": env.job_id,
                    "restarts": restarts,
                    "host": _node_name(),
                    "world_size": env.world_size,
                    "progress": self._progress(),
                },
            )
        if self.eval_plan is not None and env.rank == 0:
            from phi_hpc.launch.snapshots import SnapshotWatcher

            run_dir = Path(self.run_dir)
            with SnapshotWatcher(run_dir, list(self.eval_plan.steps), self.eval_plan.on_snapshot(run_dir)) as watcher:
                code = self._run_command(on_publish=watcher.published)
        else:
            code = self._run_command()
        return self._finish(env, restarts, code)

    def checkpoint(self):
        """submitit's preemption hook: requeue unchanged (the trainer resumes from RUN/checkpoints).

        Called from submitit's SIGUSR2 handler, i.e. only when the signal arrives before the trainer
        has installed its own; submitit then requeues the job and raises SystemExit in this process.
        """
        import submitit

        env = detect()
        restarts = self._restarts(env)
        event = {
            "event": "end",
            "job": self.job_name,
            "job_id": env.job_id,
            "restarts": restarts,
            "progress": self._progress(),
            "progressed": False,
        }
        stalled = stalled_attempts(read_attempts(self.run_dir), env.job_id, restarts) + 1
        if stalled > self.max_requeues:
            append_attempt(self.run_dir, {**event, "status": "failed", "detail": self._limit_detail(stalled)})
            self._outcome_recorded = True
            return None  # submitit then ends the job instead of requeueing it
        append_attempt(self.run_dir, {**event, "status": "requeued", "detail": "signal before training started"})
        self._outcome_recorded = True
        self._requeued_by_submitit = True
        return submitit.helpers.DelayedSubmission(self)

    # ------------------------------------------------------------------ steps
    def _restarts(self, env: DistEnv) -> int:
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            return env.restarts
        # submitit's local controller reruns tasks without telling them: count the attempts that ended
        # in a requeue (written before the rerun, so every rank of the next attempt sees the same count).
        return sum(
            1
            for e in read_attempts(self.run_dir)
            if e.get("event") == "end" and e.get("status") == "requeued" and e.get("job_id") == env.job_id
        )

    def _redirect_output(self, env: DistEnv, restarts: int) -> None:
        folder = log_dir(self.run_dir, self.job_name, env.job_id, restarts)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"rank{env.rank}"
        print(f"[phi-hpc] output of rank {env.rank} goes to {stem}.out / .err", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, suffix in ((1, ".out"), (2, ".err")):
            target = os.open(f"{stem}{suffix}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
            os.close(target)

    def _wait_for_dependencies(self) -> None:
        """Local executor chains (Slurm does this itself with afterok)."""
        pending = set(self.wait_for)
        while pending:
            for event in read_attempts(self.run_dir):
                if event.get("event") != "end" or event.get("job_id") not in pending:
                    continue
                if event.get("status") == "completed":
                    pending.discard(event["job_id"])
                elif event.get("status") == "failed":
                    raise JobFailed(f"dependency {event.get('job')} ({event['job_id']}) failed: not running")
            if pending:
                time.sleep(1)

    def _run_command(self, on_publish=None) -> int:
        from phi_hpc.cli import main

        try:
            main(list(self.argv), obj=on_publish)
        except SystemExit as exc:
            if getattr(self, "_requeued_by_submitit", False):
                raise  # submitit's requeue exit: let it end this attempt
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        except BaseException:  # a bug (or submitit refusing a requeue): keep the traceback in the .err file
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return 0

    def _finish(self, env: DistEnv, restarts: int, code: int) -> dict:
        outcome = {"event": "end", "job": self.job_name, "job_id": env.job_id, "restarts": restarts, "exit_code": code}
        if code == 0:
            if env.rank == 0:
                append_attempt(self.run_dir, {**outcome, "status": "completed"})
            return {"status": "completed", "restarts": restarts}
        if code == EXIT_PREEMPTED:
            return self._requeue(env, restarts, outcome)
        if env.rank == 0 and not getattr(self, "_outcome_recorded", False):
            append_attempt(self.run_dir, {**outcome, "status": "failed"})
        raise JobFailed(
            f"phi-hpc {' '.join(self.argv)} exited with code {code} (rank {env.rank}); "
            f"see {log_dir(self.run_dir, self.job_name, env.job_id, restarts)}"
        )

    def _progress(self) -> int | None:
        return checkpoint_progress(self.run_dir)

    def _limit_detail(self, stalled: int) -> str:
        return (
            f"no progress in {stalled} attempts (max_requeues={self.max_requeues} counts attempts without a "
            "new checkpoint); resubmit the same command to continue from the latest checkpoint"
        )

    def _uncertain(self, env: DistEnv, outcome: dict, why: str) -> None:
        detail = (
            f"not requeued: {why}; the checkpoint is saved, resubmit the same command to continue "
            "(the job ends FAILED so that nothing waiting on it starts)"
        )
        if env.rank == 0:
            append_attempt(self.run_dir, {**outcome, "status": "failed", "detail": detail})
            self._outcome_recorded = True
        raise JobFailed(detail)

    def _requeue(self, env: DistEnv, restarts: int, outcome: dict) -> dict:
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        job_id = os.environ.get("SLURM_JOB_ID", env.job_id)
        progress = self._progress()
        started = next(
            (
                e.get("progress")
                for e in reversed(read_attempts(self.run_dir))
                if e.get("event") == "start" and e.get("job_id") == env.job_id
            ),
            None,
        )
        progressed = progress is not None and (started is None or progress > started)
        outcome = {**outcome, "progress": progress, "progressed": progressed}
        try:
            state, slurm_restarts = _slurm_job_state(job_id) if on_slurm else ("RUNNING", restarts)
        except SlurmUncertain as exc:
            self._uncertain(env, outcome, str(exc))
        if state != "RUNNING":
            # The job is already ending. Slurm counts a requeue (operator's `scontrol requeue`, Slurm's own
            # preemption) the moment it is ordered, so a higher restart count than ours means "requeued";
            # otherwise it is a scancel, which must not be undone.
            requeued = slurm_restarts > restarts
            if env.rank == 0:
                append_attempt(
                    self.run_dir,
                    {
                        **outcome,
                        "status": "requeued" if requeued else "stopped",
                        "detail": "requeued by Slurm or an operator" if requeued else f"cancelled (job {state})",
                    },
                )
                print(
                    f"[phi-hpc] job {job_id} is {state}{' and requeued' if requeued else ''}: "
                    "checkpoint saved, not requeueing it myself",
                    flush=True,
                )
            return {"status": "preempted", "restarts": restarts}
        stalled = stalled_attempts(read_attempts(self.run_dir), env.job_id, restarts) + (0 if progressed else 1)
        if stalled > self.max_requeues:
            if env.rank == 0:
                append_attempt(self.run_dir, {**outcome, "status": "failed", "detail": self._limit_detail(stalled)})
                self._outcome_recorded = True
            raise JobFailed(self._limit_detail(stalled))
        if env.rank != 0:
            return {"status": "preempted", "restarts": restarts}
        print(
            f"[phi-hpc] stopped by a signal: requeueing job {env.job_id} (attempt {restarts + 1}; "
            f"{stalled} of at most {self.max_requeues} without progress)",
            flush=True,
        )
        if not on_slurm:
            append_attempt(self.run_dir, {**outcome, "status": "requeued"})
            sys.exit(LOCAL_REQUEUE_EXIT)  # submitit's local controller restarts the tasks
        try:
            _scontrol(["requeue", job_id])
        except SlurmUncertain as exc:
            if not _requeue_applied(job_id, restarts):
                self._uncertain(env, outcome, str(exc))
        append_attempt(self.run_dir, {**outcome, "status": "requeued"})
        # The requeue is recorded by the controller: ending this attempt now cannot complete the job.
        return {"status": "preempted", "restarts": restarts}


def checkpoint_progress(run_dir: str | os.PathLike) -> int | None:
    """The step of the run's published checkpoint (``RUN/checkpoints/latest``), None when there is none."""
    from phi_hpc.run_layout import RunLayout

    return RunLayout(run_dir).checkpoints.latest_step()


def stalled_attempts(events: list[dict], job_id: str, before: int | None = None) -> int:
    """Earlier attempts of this job (restart count below ``before``) requeued without a newer checkpoint."""
    return sum(
        1
        for e in events
        if e.get("event") == "end"
        and e.get("job_id") == job_id
        and e.get("status") == "requeued"
        and not e.get("progressed", False)
        and (before is None or int(e.get("restarts", 0)) < before)
    )


def _node_name() -> str:
    """Slurm's name for this node (several slurmd may share one host, as on the local test cluster)."""
    return os.environ.get("SLURMD_NODENAME") or os.uname().nodename


def _scontrol(args: list[str]) -> str:
    """``scontrol ARGS``'s output, after at most SCONTROL_TRIES attempts; SlurmUncertain when there is no answer.

    A missing scontrol (a container without Slurm's clients) is not retried. A controller that is busy
    or restarting usually answers within a minute: tries are spaced 2, 4, ... seconds apart.
    """
    if shutil.which("scontrol") is None:
        raise SlurmUncertain("scontrol is not on PATH inside the job (add Slurm's clients to the job's image/PATH)")
    timeout = float(os.environ.get(SCONTROL_TIMEOUT_ENV, "30"))
    problem = ""
    for attempt in range(SCONTROL_TRIES):
        if attempt:
            time.sleep(2 * attempt)
        try:
            code, out, err = _run_bounded(["scontrol", *args], timeout)
        except subprocess.TimeoutExpired:
            problem = f"no answer within {timeout:g} s"
            continue
        except OSError as exc:
            problem = str(exc)
            continue
        if code == 0:
            return out
        problem = f"exit {code}: {(err or out).strip()[:200]}"
    raise SlurmUncertain(f"scontrol {' '.join(args)} failed {SCONTROL_TRIES} times ({problem})")


def _run_bounded(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run a command in its own process group and kill the whole group on timeout (a wrapper script's
    children would otherwise keep the pipes open, and the timeout would not bound anything)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def _requeue_applied(job_id: str, restarts: int) -> bool:
    """Whether the controller requeued the job although ``scontrol requeue`` reported failure.

    A try that timed out under load may still have been applied; the retries then fail with "Job is
    pending execution". The controller's restart count, higher than this attempt's, says it was.
    """
    try:
        return _slurm_job_state(job_id)[1] > restarts
    except SlurmUncertain:
        return False


def _slurm_job_state(job_id: str) -> tuple[str, int]:
    """The controller's view of this job right now: (JobState, Restarts).

    A warning signal (time limit, ``--signal``) leaves the job RUNNING; scancel and requeue both show
    COMPLETING, but a requeue has already incremented Restarts. Raises SlurmUncertain without an answer.
    """
    out = _scontrol(["show", "job", "-o", job_id])
    fields = dict(item.partition("=")[::2] for item in out.split() if "=" in item)
    if not fields.get("JobState"):
        raise SlurmUncertain(f"scontrol show job {job_id} printed no JobState")
    restarts = fields.get("Restarts", "0")
    return fields["JobState"], int(restarts) if restarts.isdigit() else 0
