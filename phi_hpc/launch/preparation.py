"""``submit prepare``: the map stage as a Slurm array, reduce and pack as dependent jobs.

The shard count comes from the prepare pipeline's own planner (``plan_shards``) on the login node,
so array index ``i`` and ``prepare --stage map --shard i`` mean the same shard. Each stage is
resumable by itself (finished shards are skipped), so a failed array element can simply be rerun.
"""

from __future__ import annotations

import dataclasses
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


def submit_preparation(args: list[str], profile, options: dict, make_submitter, finish) -> None:
    from phi_hpc.data.pipeline import plan_shards
    from phi_hpc.launch.offline import localize_tokenizer

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
    # Data preparation needs CPUs, not GPUs: one process per task, whatever the training profile says.
    cpu_profile = dataclasses.replace(profile, gpus_per_node=0, tasks_per_node=1, nodes=1)
    submitter = make_submitter(run_dir)
    submitter.open()
    maps = submitter.submit_array("prepare-map", [["prepare", *args, "--stage", "map", "--shard", str(s.index)]
                                                  for s in shards], profile=cpu_profile)
    map_ids = maps.split(",")
    reduce_id = submitter.submit("prepare-reduce", ["prepare", *args, "--stage", "reduce"], depends_on=map_ids,
                                 profile=cpu_profile, wait_for_local=map_ids)
    submitter.submit("prepare-pack", ["prepare", *args, "--stage", "pack"], depends_on=[reduce_id],
                     profile=cpu_profile, wait_for_local=[reduce_id])
    finish(submitter)
