"""``phi-hpc eval run`` and ``phi-hpc eval curve`` (registered into the ``eval`` group).

Only click and the standard library at the top: torch and friends load inside ``run`` so that
``eval --help`` and ``eval curve`` stay instant on a login node.
"""

from __future__ import annotations

import click

from phi_hpc.errors import UsageError


def _parse_tasks(value: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip())


def _parse_data(items: tuple[str, ...], tasks: tuple[str, ...]) -> dict[str, str]:
    """``--data PATH`` (one task) or ``--data TASK=PATH`` (any number of tasks)."""
    data: dict[str, str] = {}
    for item in items:
        task, sep, path = item.partition("=")
        if sep and task in tasks:
            data[task] = path
        elif len(tasks) == 1:
            data[tasks[0]] = item
        else:
            raise UsageError(f"--data {item}: with several tasks, say which one it is for", f"--data {tasks[0]}=PATH")
    return data


@click.command("run")
@click.option(
    "--checkpoint",
    type=click.Path(),
    default=None,
    help="Our checkpoint: RUN, RUN/checkpoints/latest or RUN/checkpoints/<step>.",
)
@click.option(
    "--hf-model",
    type=click.Path(),
    default=None,
    help="A local transformers PhiForCausalLM folder (e.g. microsoft/phi-1).",
)
@click.option(
    "--task",
    "tasks",
    default="humaneval",
    show_default=True,
    help="Comma-separated: humaneval, mbpp (test split 11-510), mbpp-full, mbpp-sanitized, or FILE.jsonl "
    "(your own problems: task_id, prompt, tests[, entry_point, stop]).",
)
@click.option(
    "--data",
    "data_items",
    multiple=True,
    metavar="[TASK=]PATH",
    help="Dataset file instead of the default lookup (repeat with TASK= for several tasks).",
)
@click.option("--limit", type=int, default=None, help="Evaluate only the first N problems of each task.")
@click.option("--n", "n", type=int, default=1, show_default=True, help="Samples per problem.")
@click.option(
    "--greedy",
    is_flag=True,
    default=False,
    help="Greedy decoding (the default when --n is 1 and no --temperature is given).",
)
@click.option("--temperature", type=float, default=None, help="Sampling temperature [default: 0.2].")
@click.option("--top-p", type=float, default=0.95, show_default=True, help="Nucleus sampling threshold.")
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts decoded together.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option(
    "--tokenizer",
    type=click.Path(),
    default=None,
    help="tokenizer.json [default: the one in the model folder or its run].",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Sandbox processes for scoring.")
@click.option(
    "--isolation",
    type=click.Choice(["bwrap", "unshare", "rlimits"]),
    default=None,
    help="Sandbox level. Default bwrap (full isolation; the command stops if bubblewrap cannot "
    "start). unshare and rlimits are weaker: they run only when chosen, and warn.",
)
@click.option("--k", "ks", default="1,10,100", show_default=True, help="pass@k values (those <= --n are reported).")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on a GPU that supports it, else fp32.",
)
@click.option(
    "-o",
    "--output",
    "output_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="OUT_DIR: results.json, <task>/samples.jsonl, <task>/results.jsonl.",
)
def run(
    checkpoint,
    hf_model,
    tasks,
    data_items,
    limit,
    n,
    greedy,
    temperature,
    top_p,
    max_new_tokens,
    batch_size,
    seed,
    tokenizer,
    workers,
    isolation,
    ks,
    dtype,
    output_dir,
):
    """Generate completions with a checkpoint, score them in the sandbox, report pass@k.

    Launched as several tasks (srun -n N, torchrun --nproc-per-node N), each rank decodes a share of
    the problems and rank 0 merges and scores; a rerun reuses finished shards. Output:
    OUT_DIR/results.json (pass@k per task), OUT_DIR/<task>/samples.jsonl and results.jsonl.

    \b
    Example:
      phi-hpc eval run --checkpoint runs/tiny/checkpoints/latest --task humaneval,mbpp -o runs/tiny/eval/x
    """
    from rich.console import Console

    from phi_hpc.eval.config import EvalRunConfig
    from phi_hpc.eval.run import results_table, run_eval

    task_names = _parse_tasks(tasks)
    try:
        k_values = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise UsageError(f"--k {ks}: expected integers like 1,10,100") from None
    use_greedy = greedy or (n == 1 and temperature is None)
    config = EvalRunConfig(
        output_dir=output_dir,
        checkpoint=checkpoint,
        hf_model=hf_model,
        tasks=task_names,
        data=_parse_data(data_items, task_names),
        limit=limit,
        n=n,
        greedy=use_greedy,
        temperature=0.2 if temperature is None else temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        tokenizer=tokenizer,
        workers=workers,
        isolation=isolation,
        ks=k_values,
        dtype=dtype,
    )
    outcome = run_eval(config)
    if outcome.results is None:
        click.echo(f"rank {outcome.rank.rank}: shard written; rank 0 merges and scores", err=True)
        return
    console = Console()
    console.print(results_table(outcome.results))
    console.print(f"results: {outcome.out_dir / 'results.json'}")


@click.command("curve")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    "png",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG path [default: RUN/eval/curve.png; curve.json is written beside it].",
)
def curve(run_dir, png):
    """Table and PNG of pass@1 per checkpoint and validation loss against step for RUN.

    Reads RUN/eval/step-<N>/results.json (what `submit pretrain --eval-every N` produces) and the
    val_loss lines of RUN/metrics.jsonl; safe to run while training and evaluations are going on.
    """
    from rich.console import Console

    from phi_hpc.eval.curve import render_table, write_curve

    result, written = write_curve(run_dir, png)
    console = Console()
    console.print(render_table(result))
    pending = sum(p.pending for p in result.points)
    if pending:
        console.print(f"{pending} evaluation(s) still pending")
    console.print(f"plot: {written['png']}\ntable: {written['json']}")


COMMANDS = [run, curve]
