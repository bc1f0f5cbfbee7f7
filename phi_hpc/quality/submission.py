"""``submit quality-score``: ``quality score`` as a Slurm array, one element per shard.

The shard count comes from the scorer's own planner on the login node (which also writes the scores
folder's ``plan.json``), so array element ``i`` runs ``quality score ... --stage shard --shard i``.
Finished shards are skipped, so a failed or killed element is simply resubmitted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.launch.requests import ScoreRequest


def submit_scoring(request: ScoreRequest, echo=print) -> None:
    from phi_hpc.launch.submit import make_submitter
    from phi_hpc.quality.score_commands import score_config_from_args
    from phi_hpc.quality.scoring import open_scoring

    profile = request.cluster.load_profile()
    args = list(request.score_args)
    config = score_config_from_args(args)
    run = open_scoring(config)
    todo = [s.index for s in run.shards if not run.shard_path(s.index).is_file()]
    if not todo:
        raise UsageError(f"every shard of {run.out} is scored already", "nothing to submit")
    run_dir = Path(request.cluster.run_dir or run.out / "run")
    if not config.runtime.device.startswith("cuda"):
        element = dataclasses.replace(profile, gpus_per_node=0, tasks_per_node=1, nodes=1)
    else:
        element = dataclasses.replace(profile, tasks_per_node=1, nodes=1, gpus_per_node=1)
    submitter = make_submitter("quality-score", run_dir, request.cluster, profile, echo)
    submitter.open()
    submitter.submit_array(
        "quality-score",
        [["quality", "score", *args, "--stage", "shard", "--shard", str(i)] for i in todo],
        profile=element,
    )
    submitter.finish()
