"""``submit prepare``: the map stage as Slurm arrays, reduce and pack as dependent jobs.

The shard count comes from the prepare pipeline's own planner (``plan_shards``) on the login node, run
on the config prepare itself builds from the same arguments (:func:`phi_hpc.data.commands.prepare_config`);
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
from phi_hpc.launch.requests import PrepareRequest

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


def submit_preparation(request: PrepareRequest, echo=print) -> None:
    from phi_hpc.data.commands import prepare_config_from_args
    from phi_hpc.data.plan import plan_shards
    from phi_hpc.launch.offline import localize_tokenizer
    from phi_hpc.launch.submit import make_submitter

    profile = request.cluster.load_profile(job="prepare")
    max_parallel = request.max_parallel
    args = localize_tokenizer(list(request.prepare_args))  # a hub id is fetched here: the tasks get the cached file
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
    run_dir = Path(request.cluster.run_dir or out / "run")
    # ``profile`` is already the site's prepare job profile (ClusterProfile.for_job): CPUs, mem-per-cpu, its
    # own time limit; one process per element whatever the command line says about tasks and GPUs.
    cpu_profile = dataclasses.replace(profile, gpus_per_node=0, tasks_per_node=1, nodes=1, gres=None)
    submitter = make_submitter("prepare", run_dir, request.cluster, profile, echo)
    submitter.open()
    chunks = split_into_arrays(len(shards), cluster_max_array_size())
    map_ids: list[str] = []
    for number, chunk in enumerate(chunks):
        name = "prepare-map" if len(chunks) == 1 else f"prepare-map-{number}"
        argvs = [["prepare", *args, "--stage", "map", "--shard", str(shards[i].index)] for i in chunk]
        ids = submitter.submit_array(name, argvs, profile=cpu_profile, parallelism=max_parallel or len(argvs))
        map_ids.extend(ids.split(","))
    reduce_id = submitter.submit(
        "prepare-reduce",
        ["prepare", *args, "--stage", "reduce"],
        depends_on=map_ids,
        profile=cpu_profile,
        wait_for_local=map_ids,
    )
    submitter.submit(
        "prepare-pack",
        ["prepare", *args, "--stage", "pack"],
        depends_on=[reduce_id],
        profile=cpu_profile,
        wait_for_local=[reduce_id],
    )
    submitter.finish()
