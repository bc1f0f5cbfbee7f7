"""One command that proves phi-hpc's GPU paths on one GPU (A100, H100, H200) in at most 8 minutes.

    python benchmarks/gpu_check.py [--wheels DIR] [--output docs/benchmarks/gpu.md] [--budget 480]

Each stage runs in its own child process, with its own time limit, so one failure (an out-of-memory,
a CUDA error that poisons the context, a missing package) does not hide the others. The result is one
JSON document on stdout and the same, as a table plus the JSON, in ``docs/benchmarks/gpu.md``.

Stages (``benchmarks/gpu_stages.py``):

1. ``environment``: torch, CUDA, the GPU, flash-attn and deepspeed versions.
2. ``attention``: SDPA pinned to the fused kernels, and flash-attn if installed, against the math
   kernel in fp16 and bf16, forward and backward, at training (2048 x 2048) and decode (1 x 2048,
   with and without padding) shapes; which kernel ran.
3. ``model``: phi-1 on CUDA against transformers' ``PhiForCausalLM`` with the same weights.
4. ``deepspeed-bf16`` and ``deepspeed-fp16``: phi-1 steps at sequence 2048, micro-batch 8, ZeRO 1,
   fp32 gradient accumulation: tokens/s, MFU, peak memory, loss scale, skipped steps.
5. ``resume``: save a DeepSpeed checkpoint, run two steps, load it, run them again: losses compared.
6. ``generate``: tokens/s of our decoding against transformers ``generate`` at batch 32, greedy
   outputs compared.

Without a GPU it says so, runs the CPU-runnable stages at small shapes (numbers that prove the code
paths, not the speed), marks the GPU-only ones ``skipped``, and exits 0. ``--wheels DIR`` first
installs from a folder made by ``benchmarks/prepare_wheels.sh`` (offline: ``pip --no-index``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from checkout import REPO  # noqa: E402 (beside this script: puts this checkout first on sys.path)

STAGES = ["environment", "attention", "model", "deepspeed-bf16", "deepspeed-fp16", "resume", "generate"]
# Seconds each stage may take on a GPU (sum under 8 minutes with start-up); CPUs run small shapes.
LIMITS = {
    "environment": 30,
    "attention": 60,
    "model": 60,
    "deepspeed-bf16": 100,
    "deepspeed-fp16": 100,
    "resume": 70,
    "generate": 90,
}


NOTES = """## What the stages prove, and the GPU facts they rest on

* **Installing on a GPU machine.** `pip install -e .` keeps the machine's own CUDA torch where it fits setup.py.
  No package index: on a machine with one, `benchmarks/prepare_wheels.sh DIR 3.12` saves deepspeed (built
  with `pip wheel`), submitit, zstandard and the rest; `gpu_check.py --wheels DIR` installs them offline.
  flash-attn is optional (SDPA is the default): `pip install flash-attn --no-build-isolation` (it needs torch
  at build time); versions before 2.1 align causal masks top-left and are used for training shapes only.
* **Attention.** SDPA on CUDA runs pinned to the flash, memory-efficient and cuDNN kernels; the math kernel
  (B x H x T x T scores) only with `model.sdpa_kernels=math`. The kernel that ran is logged
  (`attention: sdpa on cuda bfloat16 (kernel: flash), prefill`) and listed per stage below.
* **Precision.** Micro-batch gradients are summed in fp32 (`data_types.grad_accum_dtype`), bf16 gradients
  reduced in fp32; fp16 skipped steps do not advance the LR schedule (DeepSpeed's behaviour).
* **Resume.** Exact: data position, step, LR schedule, loss scale, RNG, saved state. Bit-identical later
  losses on CPUs; on GPUs within the tolerance the `resume` stage reports (attention backward kernels and
  NCCL use atomics). Time-based checkpoints: `checkpoint.every_minutes`; saves are synchronous.
* **Not done yet.** No static KV cache or CUDA graphs in generation; no asynchronous checkpoint writes.""".split("\n")


def install_wheels(folder: Path) -> dict:
    """``pip install --no-index --find-links DIR -r DIR/requirements.txt``: what prepare_wheels.sh saved."""
    requirements = folder / "requirements.txt"
    if not requirements.is_file():
        return {
            "status": "failed",
            "reason": f"{requirements} is missing: make the folder with benchmarks/prepare_wheels.sh",
        }
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--find-links",
        str(folder),
        "-r",
        str(requirements),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    status = "ok" if proc.returncode == 0 else "failed"
    return {"status": status, "command": " ".join(command), "output_tail": (proc.stdout + proc.stderr)[-1500:]}


def run_stage(name: str, cuda: bool, budget_left: float) -> dict:
    """One stage in a child process; its JSON line, or why there is none."""
    limit = min(LIMITS[name] * (1 if cuda else 3), max(budget_left, 5))
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_stages.py"), name]
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"ran past its {limit:.0f} s limit", "seconds": round(limit, 1)}
    seconds = round(time.perf_counter() - started, 1)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STAGE ")]
    if not lines:
        tail = (proc.stderr or proc.stdout)[-1200:]
        return {
            "status": "failed",
            "reason": f"exit code {proc.returncode}, no result",
            "stderr_tail": tail,
            "seconds": seconds,
        }
    result = json.loads(lines[-1][len("STAGE ") :])
    result["seconds"] = seconds
    return result


def cuda_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def write_report(document: dict, output: Path) -> None:
    from phi_hpc.fileio import atomic_write

    cuda = document["gpu"] is not None
    lines = ["# GPU check: `benchmarks/gpu_check.py`", ""]
    if not cuda:
        lines += [
            "**No GPU was available when this file was written: nothing here is a GPU measurement, and no",
            "GPU claim is made.** The stages that can run on a CPU ran at small shapes (they prove the code",
            "paths, not the speed); the GPU-only stages are marked skipped.",
            "",
        ]
    lines += [
        f"Machine: {document['machine']['cpu']} ({document['machine']['nproc']} CPUs), GPU: "
        f"{document['gpu'] or 'none'}, Python {document['machine']['python']}, torch {document['torch']}, "
        f"{document['date']}, total {document['total_seconds']} s.",
        "",
        "On a GPU machine (A100, H100, H200; about 8 minutes):",
        "",
        "```",
        "python benchmarks/gpu_check.py            # with the packages installed",
        "python benchmarks/gpu_check.py --wheels DIR   # offline: first installs what prepare_wheels.sh saved",
        "```",
        "",
        "| stage | status | seconds | summary |",
        "|---|---|---:|---|",
    ]
    for name in STAGES:
        stage = document["stages"][name]
        text = str(stage.get("summary") or stage.get("reason", "")).replace("|", "\\|")
        lines.append(f"| {name} | {stage['status']} | {stage.get('seconds', '')} | {text} |")
    lines += [
        "",
        *NOTES,
        "",
        "Full output (the JSON document the command printed):",
        "",
        "```json",
        json.dumps(document, indent=1, sort_keys=True),
        "```",
        "",
    ]
    with atomic_write(output) as handle:
        handle.write("\n".join(lines))


def machine() -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine_info import cpu_model

    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, help="install from this wheel folder first (offline)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks" / "gpu.md")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages together")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    document: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "stages": {},
    }
    if args.wheels:
        document["wheels"] = install_wheels(args.wheels)
    import torch

    cuda = cuda_visible()
    document["torch"] = torch.__version__
    document["gpu"] = torch.cuda.get_device_name(0) if cuda else None
    if not cuda:
        print(
            "[gpu_check] no GPU visible: running the CPU-runnable stages at small shapes; GPU-only "
            "stages are skipped and nothing is claimed about GPUs",
            file=sys.stderr,
            flush=True,
        )
    wanted = [s for s in args.stages.split(",") if s]
    for name in STAGES:
        if name not in wanted:
            document["stages"][name] = {"status": "skipped", "reason": "not requested (--stages)"}
            continue
        left = args.budget - (time.perf_counter() - started)
        if left <= 5:
            document["stages"][name] = {"status": "skipped", "reason": "time budget spent"}
            continue
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        document["stages"][name] = run_stage(name, cuda, left)
    document["total_seconds"] = round(time.perf_counter() - started, 1)
    document["failed"] = [name for name, stage in document["stages"].items() if stage["status"] == "failed"]
    print(json.dumps(document, indent=1, sort_keys=True), flush=True)
    if args.output:
        write_report(document, args.output)
    return 1 if document["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
