"""The stages of ``phi-hpc demo``, each the real command a user would type, run as a child process.

Every stage goes through :func:`run_stage`: the command is printed as it starts, its output goes to
the terminal and to ``OUT/logs/<stage>.log``, and a failure becomes one line naming the stage and its
log. Running the commands rather than calling their functions shows the tool as it is, not a special
path through it. Which stages run in which order, and what demo.json says, is :mod:`phi_hpc.demo`'s.
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

from phi_hpc.errors import PhiError

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


def last_metrics(run_dir: Path) -> dict:
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


def prepare(tokenizer: Path, data_dir: Path, max_documents: int, log: Path) -> tuple[float, dict]:
    """``prepare`` the standard-library subset with ``tokenizer``; returns the seconds and the manifest."""
    seconds = run_stage(
        "prepare",
        _phi_hpc(
            "prepare",
            *stdlib_subset(),
            "--tokenizer",
            str(tokenizer),
            "-o",
            str(data_dir),
            "--max-documents",
            str(max_documents),
            "--workers",
            "2",
        ),
        log,
    )
    return seconds, json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))


def evaluate(
    run_dir: Path,
    tokenizer: Path,
    humaneval: str | None,
    limit: int,
    max_new_tokens: int,
    eval_dir: Path,
    log: Path,
) -> tuple[float, dict]:
    """``eval run`` the run's latest checkpoint on the first ``limit`` HumanEval problems; returns the
    seconds and the task's entry of ``EVAL/results.json``."""
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
        str(tokenizer),
        "-o",
        str(eval_dir),
    ]
    if humaneval:
        eval_args += ["--data", humaneval]
    seconds = run_stage("eval", _phi_hpc(*eval_args), log)
    return seconds, json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))["tasks"]["humaneval"]
