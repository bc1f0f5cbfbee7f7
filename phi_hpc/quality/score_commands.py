"""CLI of "score once, cut later": ``quality score`` and ``quality threshold`` (added to ``quality``).

Only click and the standard library at import time, like every command module.
"""

from __future__ import annotations

import json

import click

from phi_hpc.errors import UsageError


@click.command("score")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Quality model (.npz) from `quality train`.",
)
@click.option(
    "-o",
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Scores folder (plan.json, shard-NNNNN.npz, summary.json).",
)
@click.option(
    "--tokenizer",
    help="Also count each document's tokens (with EOS, as prepare does), for `quality threshold --target-tokens`.",
)
@click.option(
    "--stage",
    type=click.Choice(["all", "plan", "shard"]),
    default="all",
    show_default=True,
    help="plan: print the shard count (the Slurm array size); shard: score --shard N only.",
)
@click.option("--shard", type=int, help="The one shard to score (a Slurm array element).")
@click.option("--device", default="cpu", show_default=True, help="--embedder lm models: cpu, cuda, cuda:1 ...")
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="LM embedder precision (bf16 on GPUs).",
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="LM embedder batch size.")
@click.option(
    "--bucket/--no-bucket", default=True, show_default=True, help="Sort texts by length before batching (less padding)."
)
@click.option("--glob", default="**/*.py", show_default=True, help="Files of an input folder to read.")
@click.option("--text-key", default="text", show_default=True, help="Text field of .jsonl/.parquet inputs.")
@click.option("--shard-mb", type=float, default=8.0, show_default=True, help="Input MB per shard (as prepare).")
def score_command(stage, shard, **options):
    """Score every document of INPUTS with the quality model, once; cut later without re-embedding.

    \b
    Resumable and shardable: each shard's scores are written when complete, finished shards are
    skipped. On a cluster: phi-hpc submit quality-score INPUT... --model M.npz -o DIR --device cuda
    Then: phi-hpc quality threshold DIR --target-tokens 6e9   and
          phi-hpc prepare INPUT... --quality-scores DIR --quality-threshold T ...
    """
    from phi_hpc.quality.scoring import finish_if_complete, open_scoring, score_shard

    if (shard is None) != (stage != "shard"):
        raise UsageError("--shard N goes with --stage shard (and only with it)", "e.g. --stage shard --shard 3")
    run = open_scoring(score_config(options))
    if stage == "plan":
        click.echo(json.dumps({"stage": "plan", "shards": len(run.shards), "fingerprint": run.fingerprint}))
        return
    indices = [shard] if stage == "shard" else [s.index for s in run.shards]
    from phi_hpc.progress import progress_bar

    done = []
    with progress_bar() as progress:
        task = progress.add_task("quality score", total=len(indices))
        for index in indices:
            done.append(score_shard(run, index))
            progress.advance(task)
    summary = finish_if_complete(run)
    result = {
        "stage": stage,
        "shards": [{k: v for k, v in d.items() if k != "bad"} for d in done],
        "complete": summary is not None,
        "bad_inputs": [b for d in done for b in d.get("bad", [])],
    }
    if summary:
        result.update(documents=summary["documents"], tokens=summary["tokens"])
    click.echo(json.dumps(result, sort_keys=True))


def score_config(options: dict):
    """``quality score``'s config from its parsed options: the one place it is built, for ``quality score``
    and for ``submit quality-score`` (which plans the array from it)."""
    from phi_hpc.quality.lm_embedder import RuntimeOptions
    from phi_hpc.quality.scoring import ScoreConfig

    runtime = RuntimeOptions(
        device=options["device"], dtype=options["dtype"], batch_size=options["batch_size"], bucket=options["bucket"]
    )
    return ScoreConfig(
        tuple(options["inputs"]),
        options["model_path"],
        options["output_dir"],
        options["tokenizer"],
        options["glob"],
        options["text_key"],
        options["shard_mb"],
        runtime=runtime,
    )


def score_config_from_args(args: list[str], caller: str = "submit quality-score"):
    """The config ``quality score ARGS`` would run with, for ``caller``, which scores every shard itself (no
    --stage/--shard) and passes ARGS on to its jobs unchanged."""
    try:
        params = score_command.make_context("quality score", list(args), resilient_parsing=False).params
    except click.exceptions.Exit:
        raise UsageError(f"{caller}: nothing to submit (help requested)") from None
    except click.ClickException as exc:
        raise UsageError(f"{caller}: {exc.format_message()}", "see phi-hpc quality score --help") from None
    if params["stage"] != "all" or params["shard"] is not None:
        raise UsageError(f"{caller} runs every shard itself: leave out --stage/--shard")
    return score_config(params)


@click.command("threshold")
@click.argument("source", type=click.Path())
@click.option(
    "--target-tokens",
    type=float,
    help="Pick the threshold whose kept tokens are closest to this (phi-1: about 6e9 of 35e9).",
)
@click.option("--target-keep", type=float, help="Pick the threshold keeping this share of documents (e.g. 0.17).")
@click.option("--steps", type=int, default=10, show_default=True, help="Rows of the printed table.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def threshold_command(source, target_tokens, target_keep, steps, as_json):
    """Keep rate and tokens per threshold from a `quality score` folder or a prepare audit.jsonl, and the
    threshold that hits --target-tokens or --target-keep.

    \b
    A prepare audit holds scores but no token counts of dropped documents: it answers --target-keep
    only; a scores folder written with --tokenizer answers both.
    """
    from phi_hpc.quality.threshold import choose, read_source, table

    if target_tokens is not None and target_keep is not None:
        raise UsageError("--target-tokens and --target-keep both given", "pick one budget")
    if target_keep is not None and not 0 < target_keep <= 1:
        raise UsageError(f"--target-keep {target_keep} must be in (0, 1]", "e.g. --target-keep 0.17")
    if steps < 1:
        raise UsageError(f"--steps {steps} must be >= 1")
    scores, tokens, kind = read_source(source)
    result = {
        "source": source,
        "kind": kind,
        "documents": int(len(scores)),
        "tokens": int(tokens.sum()) if tokens is not None else None,
        "table": table(scores, tokens, steps),
    }
    if target_tokens is not None or target_keep is not None:
        result["choice"] = choose(scores, tokens, target_tokens=target_tokens, target_keep=target_keep)
    _print(result)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))


def _print(result: dict) -> None:
    from rich.table import Table

    from phi_hpc.progress import stderr_console

    view = Table(title=f"quality threshold: {result['documents']} documents ({result['kind']})")
    for column in ("threshold", "keep rate", "documents", "tokens", "token share"):
        view.add_column(column, justify="right")
    for row in result["table"]:
        view.add_row(
            f"{row['threshold']:.4f}",
            f"{row['keep_rate']:.3f}",
            str(row["documents"]),
            "-" if row["tokens"] is None else str(row["tokens"]),
            "-" if row["token_share"] is None else f"{row['token_share']:.3f}",
        )
    stderr_console.print(view)
    choice = result.get("choice")
    if choice:
        stderr_console.print(
            f"chosen threshold {choice['threshold']:.6f}: keeps {choice['documents']} documents "
            f"({choice['keep_rate']:.3f}), {choice['tokens']} tokens"
            + (f", {choice['relative_error']:+.2%} from the target" if choice.get("relative_error") is not None else "")
        )
        stderr_console.print(
            f"use it: phi-hpc prepare ... --quality-scores DIR --quality-threshold {choice['threshold']:.6f}"
        )
