"""``submit prepare``: the map stage as Slurm arrays, reduce and pack as dependent jobs.

The shard count comes from the prepare pipeline's own planner (``plan_shards``) on the login node;
every array element runs ``prepare --stage map --shard i`` with its shard named in its arguments.
A cluster refuses arrays with more elements than its ``MaxArraySize`` (``scontrol show config``), so
a larger plan becomes several arrays of at most that many elements, each throttled with ``%N`` to
``--max-parallel`` running elements, and reduce depends on all of them. Each stage is resumable by
itself (finished shards are skipped), so a failed array element can simply be rerun.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from phi_hpc.errors import UsageError


def prepare_config_from_args(args: list[str]):
    """Parse prepare's arguments with prepare's own click command, and build its config the same way."""
    import click

    from phi_hpc.config import load_config
    from phi_hpc.data.commands import prepare_command
    from phi_hpc.data.config import PrepareConfig

    try:
        context = prepare_command.make_context("prepare", list(args), resilient_parsing=False)
    except click.exceptions.Exit:
        raise UsageError("submit prepare: nothing to submit (help requested)") from None
    except click.ClickException as exc:
        raise UsageError(f"submit prepare: {exc.format_message()}", "see phi-hpc prepare --help") from None
    params = context.params
    if params.get("stage", "all") != "all" or params.get("shard") is not None:
        raise UsageError("submit prepare runs every stage itself: leave out --stage/--shard")
    config = load_config(PrepareConfig, params.get("config_path"), params.get("overrides") or ())
    given = {"inputs": list(params.get("inputs") or ()) or None, "tokenizer": params.get("tokenizer"),
             "output_dir": params.get("output_dir")}
    config = dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None})
    if not config.output_dir or not config.tokenizer or not config.inputs:
        raise UsageError("submit prepare needs INPUT..., --tokenizer and -o OUT_DIR")
    return config


SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default when slurm.conf does not set MaxArraySize


def cluster_max_array_size() -> int:
    """The controller's MaxArraySize (arrays may use indices 0 .. MaxArraySize-1).

    Slurm's default when the controller cannot be asked (a dry run away from the cluster).
    """
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return SLURM_DEFAULT_MAX_ARRAY_SIZE
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return SLURM_DEFAULT_MAX_ARRAY_SIZE


def split_into_arrays(count: int, max_array_size: int) -> list[range]:
    """Shard indices 0..count-1 in consecutive chunks of at most ``max_array_size``."""
    return [range(start, min(start + max_array_size, count)) for start in range(0, count, max_array_size)]


def submit_preparation(args: list[str], profile, options: dict, make_submitter, finish) -> None:
    from phi_hpc.data.plan import plan_shards
    from phi_hpc.launch.offline import localize_tokenizer

    max_parallel = options.pop("max_parallel", None)
    if max_parallel is not None and max_parallel < 1:
        raise UsageError(f"--max-parallel {max_parallel}: must be at least 1")
    args = localize_tokenizer(args)  # a hub id is fetched here: the array tasks get the cached file
    config = prepare_config_from_args(args)
    if "--tokenizer" not in " ".join(args):  # named in a --config file: pass the cached file explicitly
        args = localize_tokenizer([*args, "--tokenizer", config.tokenizer])
    if config.decontaminate and not config.benchmark_data:
        from phi_hpc.quality.benchmarks import default_benchmark_files

        default_benchmark_files()  # MBPP into the cache now, where the jobs' default lookup finds it
    shards = plan_shards(config)
    if not shards:
        raise UsageError("submit prepare: the inputs contain no files to prepare")
    out = Path(config.output_dir).resolve()
    run_dir = Path(options.pop("run_dir") or out / "run")
    # ``profile`` is already the site's prepare job profile (ClusterProfile.for_job): CPUs, mem-per-cpu, its
    # own time limit; one process per element whatever the command line says about tasks and GPUs.
    cpu_profile = dataclasses.replace(profile, gpus_per_node=0, tasks_per_node=1, nodes=1, gres=None)
    submitter = make_submitter(run_dir)
    submitter.open()
    chunks = split_into_arrays(len(shards), cluster_max_array_size())
    map_ids: list[str] = []
    for number, chunk in enumerate(chunks):
        name = "prepare-map" if len(chunks) == 1 else f"prepare-map-{number}"
        argvs = [["prepare", *args, "--stage", "map", "--shard", str(shards[i].index)] for i in chunk]
        ids = submitter.submit_array(name, argvs, profile=cpu_profile, parallelism=max_parallel or len(argvs))
        map_ids.extend(ids.split(","))
    reduce_id = submitter.submit("prepare-reduce", ["prepare", *args, "--stage", "reduce"], depends_on=map_ids,
                                 profile=cpu_profile, wait_for_local=map_ids)
    submitter.submit("prepare-pack", ["prepare", *args, "--stage", "pack"], depends_on=[reduce_id],
                     profile=cpu_profile, wait_for_local=[reduce_id])
    finish(submitter)
