"""``submit quality-score``: ``quality score`` as a Slurm array, one element per shard.

The shard count comes from the scorer's own planner on the login node (which also writes the scores
folder's ``plan.json``), so array element ``i`` runs ``quality score ... --stage shard --shard i``.
Finished shards are skipped, so a failed or killed element is simply resubmitted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from phi_hpc.errors import UsageError


def _score_config_from_args(args: list[str]):
    import click

    from phi_hpc.quality.lm_embedder import RuntimeOptions
    from phi_hpc.quality.score_commands import score_command
    from phi_hpc.quality.scoring import ScoreConfig

    try:
        params = score_command.make_context("quality score", list(args), resilient_parsing=False).params
    except click.exceptions.Exit:
        raise UsageError("submit quality-score: nothing to submit (help requested)") from None
    except click.ClickException as exc:
        raise UsageError(f"submit quality-score: {exc.format_message()}", "see phi-hpc quality score --help") from None
    if params["stage"] != "all" or params["shard"] is not None:
        raise UsageError("submit quality-score runs every shard itself: leave out --stage/--shard")
    runtime = RuntimeOptions(device=params["device"], dtype=params["dtype"], batch_size=params["batch_size"],
                             bucket=params["bucket"])
    return ScoreConfig(tuple(params["inputs"]), params["model_path"], params["output_dir"], params["tokenizer"],
                       params["glob"], params["text_key"], params["shard_mb"], runtime=runtime)


def submit_scoring(args: list[str], profile, options: dict, make_submitter, finish) -> None:
    from phi_hpc.quality.scoring import open_scoring

    config = _score_config_from_args(args)
    run = open_scoring(config)
    todo = [s.index for s in run.shards if not run.shard_path(s.index).is_file()]
    if not todo:
        raise UsageError(f"every shard of {run.out} is scored already", "nothing to submit")
    run_dir = Path(options.pop("run_dir") or run.out / "run")
    if not config.runtime.device.startswith("cuda"):
        profile = dataclasses.replace(profile, gpus_per_node=0, tasks_per_node=1, nodes=1)
    else:
        profile = dataclasses.replace(profile, tasks_per_node=1, nodes=1, gpus_per_node=1)
    submitter = make_submitter(run_dir)
    submitter.open()
    submitter.submit_array("quality-score", [["quality", "score", *args, "--stage", "shard", "--shard", str(i)]
                                             for i in todo], profile=profile)
    finish(submitter)
