"""``phi-hpc submit {prepare,pretrain,finetune,eval,quality-score}``, ``status``, ``logs``, ``cancel``,
``doctor``, ``plan``.

Each submit command turns its options into one typed request (:mod:`phi_hpc.launch.requests`) and
hands it to the launch code; nothing below these functions sees click. Top-level imports are click
and light phi_hpc modules only: ``status``, ``logs`` and ``cancel`` run on login nodes and must not
pay for torch (a test checks it). ``submit pretrain`` validates the training config, which does
import torch, inside its body.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from phi_hpc.constants import DEFAULT_PROFILE
from phi_hpc.errors import UsageError
from phi_hpc.launch.requests import (
    CLUSTER_CHOICES,
    ClusterRequest,
    EvalRequest,
    PlanRequest,
    PrepareRequest,
    ProfileOverrides,
    ScoreRequest,
    TrainingRequest,
)

CLUSTER_OPTIONS = [
    click.option(
        "--profile",
        default=DEFAULT_PROFILE,
        show_default=True,
        help="Cluster profile: a name in configs/cluster/ or a YAML file.",
    ),
    click.option(
        "--cluster",
        type=click.Choice(CLUSTER_CHOICES),
        default="auto",
        show_default=True,
        help="auto: Slurm when sbatch exists and the controller answers, else local processes.",
    ),
    click.option("--nodes", type=int, help="Nodes (overrides the profile)."),
    click.option("--gpus-per-node", type=int),
    click.option("--tasks-per-node", type=int, help="Processes per node (one per GPU for training)."),
    click.option("--cpus-per-task", type=int),
    click.option("--mem", help="sbatch --mem (0 = the whole node)."),
    click.option("--time", help="Time limit: MM, HH:MM:SS or D-HH:MM:SS."),
    click.option("--partition"),
    click.option("--account"),
    click.option("--qos"),
    click.option("--constraint"),
    click.option("--exclusive/--no-exclusive", default=None),
    click.option(
        "--signal-delay",
        "signal_delay_s",
        type=int,
        help="Seconds before the time limit at which Slurm sends SIGUSR2 (checkpoint + requeue).",
    ),
    click.option("--max-requeues", type=int, help="Preemptions/time limits survived before the run fails."),
    click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default: the config's run_dir)."),
    click.option("--dry-run", is_flag=True, help="Print the sbatch script(s) and submit nothing."),
]


def cluster_options(func):
    for option in reversed(CLUSTER_OPTIONS):
        func = option(func)
    return func


def cluster_request(options: dict) -> ClusterRequest:
    """The shared cluster options of a submit command (:data:`CLUSTER_OPTIONS`), as one typed value."""
    overrides = ProfileOverrides(**{f.name: options[f.name] for f in dataclasses.fields(ProfileOverrides)})
    return ClusterRequest(
        profile=options["profile"],
        cluster=options["cluster"],
        overrides=overrides,
        run_dir=options["run_dir"],
        dry_run=options["dry_run"],
    )


@click.group("submit")
def submit_group():
    """Submit jobs to Slurm (or run them locally) through submitit.

    \b
    Examples:
      phi-hpc submit pretrain configs/pretrain.yaml --nodes 4 --time 2-00:00:00 --eval-every 1000
      phi-hpc submit eval --checkpoint runs/phi-1/checkpoints/latest --after runs/phi-1 -- --task humaneval
      phi-hpc submit prepare /data/code/*.jsonl.zst --tokenizer tok.json -o data/out
      phi-hpc submit pretrain configs/tiny-pretrain.yaml --profile local --dry-run
    """


def _training_command(kind: str):
    what = "Pretrain" if kind == "pretrain" else "Finetune"

    @submit_group.command(
        kind,
        help=(
            f"{what} from CONFIG on the cluster (every task runs `phi-hpc train RUN/config.yaml`).\n\n"
            "Each task gets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from Slurm's variables. On SIGUSR2 "
            "(sent --signal-delay seconds before the time limit, or on preemption) the trainer checkpoints and the "
            "job requeues itself, at most --max-requeues times; the requeued job resumes from "
            "RUN/checkpoints/latest."
        ),
    )
    @click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
    @click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable)."
    )
    @click.option(
        "--eval-every",
        type=int,
        help="Evaluate every N steps: the training job submits each such checkpoint's eval job as soon "
        "as the checkpoint is published.",
    )
    @click.option(
        "--eval-profile",
        help="Cluster profile of those eval jobs, used as it is (default: the training profile's eval: job profile).",
    )
    @click.option(
        "--eval-args",
        default="--task humaneval",
        show_default=True,
        help="Arguments for each `phi-hpc eval run` of --eval-every.",
    )
    @cluster_options
    def command(config_file, overrides, eval_every, eval_profile, eval_args, **options):
        from phi_hpc.launch.training import submit_training

        submit_training(
            TrainingRequest(
                kind, config_file, tuple(overrides), eval_every, eval_profile, eval_args, cluster_request(options)
            ),
            echo=click.echo,
        )

    return command


_training_command("pretrain")
_training_command("finetune")


@submit_group.command("eval", context_settings={"ignore_unknown_options": True})
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(),
    help="RUN, RUN/checkpoints/latest or RUN/checkpoints/<step> (need not exist yet with --after).",
)
@click.option(
    "--after",
    multiple=True,
    metavar="JOB|RUN",
    help="Start only after this job (or this run's training job) succeeded; cancelled if it fails.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    help="Results folder (default: RUN/eval/<step-N|latest> when the checkpoint is in a submitted run).",
)
@cluster_options
@click.argument("eval_args", nargs=-1, type=click.UNPROCESSED)
def submit_eval(checkpoint, after, output, eval_args, **options):
    """Evaluate a checkpoint in a job running `phi-hpc eval run --checkpoint PATH [EVAL_ARGS]`.

    EVAL_ARGS go to `eval run` unchanged (e.g. --task humaneval,mbpp --n 20 --temperature 0.8).
    """
    from phi_hpc.launch.evals import submit_evaluation

    submit_evaluation(
        EvalRequest(checkpoint, tuple(after), output, tuple(eval_args), cluster_request(options)), echo=click.echo
    )


@submit_group.command("prepare", context_settings={"ignore_unknown_options": True})
@cluster_options
@click.option(
    "--max-parallel",
    type=int,
    default=None,
    help="Map tasks of one array running at a time (sbatch --array=...%N). Default: all.",
)
@click.argument("prepare_args", nargs=-1, type=click.UNPROCESSED, required=True)
def submit_prepare(prepare_args, max_parallel, **options):
    """Run `phi-hpc prepare PREPARE_ARGS` as Slurm arrays (one map task per input shard; several arrays
    when the plan exceeds the cluster's MaxArraySize), then the reduce and pack stages as jobs that depend
    on all of them. PREPARE_ARGS are prepare's own arguments."""
    from phi_hpc.launch.preparation import submit_preparation

    submit_preparation(PrepareRequest(tuple(prepare_args), max_parallel, cluster_request(options)), echo=click.echo)


@submit_group.command("quality-score", context_settings={"ignore_unknown_options": True})
@cluster_options
@click.argument("score_args", nargs=-1, type=click.UNPROCESSED, required=True)
def submit_quality_score(score_args, **options):
    """Run `phi-hpc quality score SCORE_ARGS` as a Slurm array, one element per shard (GPUs when
    SCORE_ARGS say --device cuda, else CPUs only)."""
    from phi_hpc.quality.submission import submit_scoring

    submit_scoring(ScoreRequest(tuple(score_args), cluster_request(options)), echo=click.echo)


@click.command("status")
@click.argument("run", required=False, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(run, as_json):
    """The jobs of RUN (default: your recent submissions): state, elapsed, requeues, step, loss, tokens/s,
    last log line. Reads files and asks squeue/sacct once: cheap enough to run in a loop."""
    from phi_hpc.launch.watch import iter_runs, print_status

    for run_dir in iter_runs(run):
        print_status(Path(run_dir), as_json)


@click.command("logs")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--job", "job_name", help="Job of the run (default: train, else the last one submitted).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines, across requeues, until the job ends.")
@click.option(
    "--rank",
    default="0",
    show_default=True,
    metavar="N|all",
    help="Whose log: a rank, or 'all' for every rank of every node (lines prefixed [rankN]).",
)
@click.option("--err", "stderr", is_flag=True, help="The task's stderr instead of stdout.")
@click.option("-n", "--lines", type=int, default=20, show_default=True)
def logs_command(run, job_name, follow, rank, stderr, lines):
    """Show a job's log (the newest attempt), like `tail [-f]`."""
    from phi_hpc.launch.logs import follow_logs

    if rank != "all" and not rank.isdigit():
        raise UsageError(f"--rank {rank}: give a rank number or 'all'")
    try:
        follow_logs(Path(run), job_name, None if rank == "all" else int(rank), stderr, lines, follow)
    except KeyboardInterrupt:
        pass


@click.command("cancel")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--job", "job_name", help="Cancel only this job of the run.")
def cancel_command(run, job_name):
    """Cancel the unfinished jobs of RUN (training checkpoints on the way out)."""
    from phi_hpc.launch.cancel import cancel_run

    for line in cancel_run(Path(run), job_name):
        click.echo(line)


@click.command("doctor")
@click.option(
    "--profile",
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Cluster profile whose partition, GPUs, account and setup the first run will use.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default="runs",
    show_default=True,
    help="Where runs will go: the probe job must be able to write here (RUN_DIR/doctor/).",
)
@click.option("--tokenizer", type=click.Path(dir_okay=False), help="The tokenizer.json your runs use.")
@click.option(
    "--probe-timeout",
    type=float,
    default=300,
    show_default=True,
    help="Seconds to wait for the probe job (queue wait included).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor_command(profile, run_dir, tokenizer, probe_timeout, as_json):
    """Check what a first run needs: Slurm and accounting, the profile's partition and GPUs, a shared run
    folder, torch/CUDA/NCCL/bubblewrap//tmp on a compute node (one tiny probe job), tokenizer and benchmark
    data. Prints ok/warn/problem with the fix; exits 1 if something blocks a run."""
    from phi_hpc.launch.doctor import run_doctor
    from phi_hpc.launch.profiles import load_profile

    code = run_doctor(load_profile(profile), Path(run_dir), tokenizer, probe_timeout, as_json)
    raise SystemExit(code)


@click.command("plan")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Cluster profile of the training job.")
@click.option("--nodes", type=int, help="Nodes (overrides the profile).")
@click.option("--time", help="Time limit of each job (overrides the profile).")
@click.option("--gpu", help="a100, h100 or h200 (default: from the profile's constraint).")
@click.option("--mfu", type=float, help="Model FLOPs utilisation to assume, e.g. 0.5.")
@click.option(
    "--mfu-from",
    type=click.Path(),
    metavar="RUN|METRICS",
    help="Use the median MFU measured by an earlier run (its metrics.jsonl).",
)
@click.option("--tokens", help="Train on this many tokens instead of the config's steps (e.g. 50B).")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    help="Prepared data folder (manifest.json) for epochs; default: the config's data.paths.",
)
@click.option("--eval-every", type=int, help="Count the eval jobs of `submit --eval-every N`.")
@click.option(
    "--eval-profile", default=None, help="Cluster profile of the eval jobs (default: the training one, 1 node)."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the plan as JSON here.")
def plan_command(overrides, **options):
    """What CONFIG will cost before you submit it: tokens, epochs, GPU-hours and wall time at an MFU,
    the number of time-limited jobs, checkpoint disk use and the eval jobs. Torch-free (login nodes).

    \b
    Examples:
      phi-hpc plan configs/pretrain.yaml --tokens 50B --mfu 0.53            # the paper's ~770 A100-hours
      phi-hpc plan configs/pretrain.yaml --mfu-from runs/trial --data data/code-textbook --nodes 4
    """
    from phi_hpc.launch.plan import plan_from_request

    plan_from_request(PlanRequest(overrides=tuple(overrides), **options), echo=click.echo)


COMMANDS = [submit_group, status_command, logs_command, cancel_command, doctor_command, plan_command]
