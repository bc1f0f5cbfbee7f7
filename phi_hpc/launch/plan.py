"""``phi-hpc plan``: what a training config will cost, before anyone asks for an allocation.

Everything here is arithmetic on files a login node already has: the run config (plain YAML, so no
torch), the model preset it names, the cluster profile, and optionally the prepared data's
``manifest.json`` and an earlier run's ``metrics.jsonl`` (for a measured MFU). The FLOP convention is
:mod:`phi_hpc.model.flops`'s (6N + 12·L·d·T per token, the one MFU figures are quoted in), so a plan
and the trainer's own MFU column speak the same units.

Paper check: phi-1 at 50B tokens on A100s at 53% MFU is about 770 GPU-hours ("four days on eight
A100s"), which a test reproduces.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.config import _resolve_named_config, merge, parse_overrides, read_yaml
from phi_hpc.errors import UsageError
from phi_hpc.launch.profiles import ClusterProfile
from phi_hpc.launch.requests import PlanRequest
from phi_hpc.model.flops import PEAK_FLOPS, parameter_count, training_flops_per_token
from phi_hpc.run_layout import RunLayout

# Minutes of each time-limited job that do not train: start-up, resume from a checkpoint, the
# checkpoint taken at the warning signal. A plan that ignores them promises one job too few.
JOB_OVERHEAD_MIN = 10.0


@dataclass(frozen=True)
class ModelShape:
    """The four numbers FLOP and parameter arithmetic need (duck-types ``PhiConfig``)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int


@dataclass(frozen=True)
class PlanInputs:
    steps: int
    global_batch: int
    seq_len: int
    precision: str
    checkpoint_every: int
    keep_last: int
    keep_every: int
    data_tokens: int | None  # training tokens in the prepared data, when its manifest is at hand


@dataclass(frozen=True)
class Plan:
    """The printed plan; also written as JSON (``--json``) for scripts."""

    gpu: str
    gpus: int
    mfu: float
    mfu_source: str
    parameters: int
    flops_per_token: float
    tokens_per_step: int
    steps: int
    total_tokens: int
    epochs: float | None
    tokens_per_s: float
    gpu_hours: float
    wall_hours: float
    job_time_limit_h: float
    jobs: int
    requeues: int
    max_requeues: int
    checkpoint_gb: float
    checkpoints_kept: int
    checkpoint_disk_gb: float
    eval_jobs: int
    eval_gpu_hours_max: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ inputs
def read_run_config(path: str | Path, overrides: list[str]) -> dict:
    """The training config as plain data (``--set`` applied), without the torch-importing dataclasses."""
    config = merge(read_yaml(path), parse_overrides(overrides))
    model = config.get("model", "phi-1")
    if isinstance(model, str):
        model_path = _resolve_named_config(model, "model", Path(path).parent, str(path))
        config["model"] = merge(read_yaml(model_path), {})
    elif not isinstance(model, dict):
        raise UsageError(f"{path}: model must be a preset name or a mapping", "e.g. model: phi-1")
    return config


def model_shape(config: dict, source: str) -> ModelShape:
    model = config["model"]
    try:
        return ModelShape(
            *(int(model[key]) for key in ("vocab_size", "hidden_size", "num_layers", "intermediate_size"))
        )
    except KeyError as exc:
        raise UsageError(f"{source}: model has no {exc.args[0]}", "use a preset from configs/model/") from None


def plan_inputs(config: dict, data_dir: Path | None) -> PlanInputs:
    section = lambda name: config.get(name) or {}  # noqa: E731 (sections are optional, defaults apply)
    checkpoint = section("checkpoint")
    return PlanInputs(
        steps=int(config.get("steps", 0)),
        global_batch=int(section("batch").get("global_size", 0)),
        seq_len=int(section("data").get("seq_len", 2048)),
        precision=str(section("deepspeed").get("precision", "fp32")),
        checkpoint_every=int(checkpoint.get("every", 1000)),
        keep_last=int(checkpoint.get("keep_last", 3)),
        keep_every=int(checkpoint.get("keep_every", 0) or 0),
        data_tokens=_data_tokens(data_dir, section("data").get("paths") or []),
    )


def _data_tokens(data_dir: Path | None, config_paths: list[str]) -> int | None:
    """Training tokens from ``manifest.json`` of --data, else of the config's data paths (if present)."""
    folders = [data_dir] if data_dir is not None else [Path(p) for p in config_paths]
    total, found = 0, False
    for folder in folders:
        manifest = folder if folder.name == "manifest.json" else folder / "manifest.json"
        if not manifest.is_file():
            if data_dir is not None:
                raise UsageError(f"--data {data_dir}: no manifest.json", "pass a `phi-hpc prepare` output folder")
            continue
        try:
            total += int(json.loads(manifest.read_text(encoding="utf-8"))["counts"]["tokens"])
            found = True
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"{manifest}: not a prepare manifest (no counts.tokens)", "pass a `phi-hpc prepare` output folder"
            ) from None
    return total if found else None


def measured_mfu(metrics_path: Path) -> float:
    """Median MFU of an earlier run's training steps (the first steps, warm-up and compile, excluded)."""
    from phi_hpc.train.metrics import read_metrics

    values = [row["mfu"] for row in read_metrics(metrics_path) if isinstance(row.get("mfu"), (int, float))]
    if not values:
        raise UsageError(
            f"{metrics_path}: no step reports an MFU (runs on CPUs or unknown GPUs do not)",
            "pass --mfu FRACTION instead, e.g. --mfu 0.5",
        )
    return statistics.median(values[len(values) // 10 :])


def gpu_kind(profile: ClusterProfile, gpu: str | None) -> str:
    name = (gpu or profile.constraint or "").lower()
    for key in PEAK_FLOPS:
        if key in name:
            return key
    raise UsageError(
        f"cannot tell the GPU from {'--gpu ' + gpu if gpu else 'the profile constraint'} ({name or 'none'})",
        f"pass --gpu {'|'.join(PEAK_FLOPS)}",
    )


# ------------------------------------------------------------------------------------ arithmetic
def checkpoint_bytes(parameters: int, precision: str) -> int:
    """One ``checkpoints/<step>/``: the HF model file plus DeepSpeed's model and optimizer states.

    Half precision keeps half-size weights and an fp32 master copy; Adam adds two fp32 moments.
    ZeRO partitions these across ranks but the total on disk is the same.
    """
    half = precision in ("fp16", "bf16")
    weights = parameters * (2 if half else 4)
    optimizer = parameters * ((4 if half else 0) + 8)
    return weights * 2 + optimizer  # model.safetensors + deepspeed model states + optimizer


def checkpoints_kept(steps: int, every: int, keep_last: int, keep_every: int) -> int:
    """Checkpoints on disk at the end: the newest ``keep_last`` plus the milestones (the trainer's rule)."""
    saved = list(range(every, steps + 1, every)) if every else []
    kept = set(saved[-keep_last:]) if keep_last else set()
    return len(kept | {s for s in saved if keep_every and s % keep_every == 0})


def make_plan(
    inputs: PlanInputs,
    model: ModelShape,
    profile: ClusterProfile,
    gpu: str,
    mfu: float,
    mfu_source: str,
    total_tokens: float | None = None,
    eval_every: int = 0,
    eval_profile: ClusterProfile | None = None,
) -> Plan:
    if not 0 < mfu <= 1:
        raise UsageError(f"--mfu {mfu}: must be a fraction in (0, 1]", "e.g. --mfu 0.5 for 50%")
    tokens_per_step = inputs.global_batch * inputs.seq_len
    steps = math.ceil(total_tokens / tokens_per_step) if total_tokens else inputs.steps
    if steps < 1 or tokens_per_step < 1:
        raise UsageError(
            "the config trains no tokens (steps, batch.global_size or data.seq_len is 0)", "set steps, or pass --tokens"
        )
    flops_per_token = training_flops_per_token(model, inputs.seq_len)
    gpus = profile.nodes * profile.gpus_per_node
    if gpus < 1:
        raise UsageError("the profile asks for no GPUs", "use a GPU profile or --gpus-per-node")
    tokens = steps * tokens_per_step
    tokens_per_s = mfu * PEAK_FLOPS[gpu] * gpus / flops_per_token
    wall_h = tokens / tokens_per_s / 3600
    limit_h = profile.time_minutes / 60
    useful_h = max(limit_h - JOB_OVERHEAD_MIN / 60, limit_h / 2)
    jobs = math.ceil(wall_h / useful_h)
    ckpt = checkpoint_bytes(parameter_count(model), inputs.precision)
    kept = checkpoints_kept(steps, inputs.checkpoint_every, inputs.keep_last, inputs.keep_every)
    evals = steps // eval_every if eval_every else 0
    eval_gpus = (eval_profile.nodes * eval_profile.gpus_per_node) if eval_profile else 0
    eval_hours = (eval_profile.time_minutes / 60) if eval_profile else 0.0
    return Plan(
        gpu=gpu,
        gpus=gpus,
        mfu=mfu,
        mfu_source=mfu_source,
        parameters=parameter_count(model),
        flops_per_token=flops_per_token,
        tokens_per_step=tokens_per_step,
        steps=steps,
        total_tokens=tokens,
        epochs=tokens / inputs.data_tokens if inputs.data_tokens else None,
        tokens_per_s=tokens_per_s,
        gpu_hours=wall_h * gpus,
        wall_hours=wall_h,
        job_time_limit_h=limit_h,
        jobs=jobs,
        requeues=jobs - 1,
        max_requeues=profile.max_requeues,
        checkpoint_gb=ckpt / 1e9,
        checkpoints_kept=kept,
        checkpoint_disk_gb=ckpt * kept / 1e9,
        eval_jobs=evals,
        eval_gpu_hours_max=evals * eval_gpus * eval_hours,
    )


def parse_tokens(text: str) -> float:
    """``50B``, ``7.5e9``, ``300M`` -> a token count."""
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
    raw = text.strip().lower()
    try:
        return float(raw[:-1]) * scale[raw[-1]] if raw and raw[-1] in scale else float(raw)
    except ValueError:
        raise UsageError(f"--tokens {text}: not a number", "e.g. --tokens 50B or --tokens 5e10") from None


def render_plan(plan: Plan) -> list[tuple[str, str]]:
    """(label, value) rows for the console table."""
    epochs = f"{plan.epochs:.2f}" if plan.epochs is not None else "n/a (no --data manifest)"
    requeue_note = (
        "" if plan.requeues <= plan.max_requeues else f"  (over max_requeues={plan.max_requeues}: raise it or --time)"
    )
    eval_row = (
        f"{plan.eval_jobs} jobs, at most {plan.eval_gpu_hours_max:,.0f} GPU-hours (their time limit)"
        if plan.eval_jobs
        else "none (--eval-every not given)"
    )
    return [
        ("model", f"{plan.parameters / 1e9:.3f}B parameters, {plan.flops_per_token / 1e9:.2f} GFLOP/token"),
        ("tokens", f"{plan.tokens_per_step:,} per step x {plan.steps:,} steps = {plan.total_tokens / 1e9:,.2f}B"),
        ("epochs over the data", epochs),
        (
            "throughput",
            f"{plan.tokens_per_s:,.0f} tokens/s on {plan.gpus} x {plan.gpu.upper()} "
            f"at {plan.mfu:.0%} MFU ({plan.mfu_source})",
        ),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}"),
        ("wall time", f"{plan.wall_hours:,.1f} h ({plan.wall_hours / 24:.1f} days)"),
        ("jobs", f"{plan.jobs} of {plan.job_time_limit_h:g} h ({plan.requeues} requeues){requeue_note}"),
        (
            "checkpoints",
            f"{plan.checkpoint_gb:,.1f} GB each, {plan.checkpoints_kept} kept = {plan.checkpoint_disk_gb:,.1f} GB",
        ),
        ("evaluations", eval_row),
    ]


def plan_from_request(request: PlanRequest, echo=print) -> Plan:
    """``phi-hpc plan``: read everything, compute, print the table (and the JSON when asked)."""
    from phi_hpc.fileio import write_json
    from phi_hpc.launch.profiles import load_profile

    config_file, mfu, mfu_from = request.config_file, request.mfu, request.mfu_from
    config = read_run_config(config_file, list(request.overrides))
    profile = load_profile(request.profile, {"nodes": request.nodes, "time": request.time})
    eval_profile = load_profile(request.eval_profile) if request.eval_profile else profile.for_job("eval")
    if (mfu is None) == (mfu_from is None):
        raise UsageError("give exactly one of --mfu and --mfu-from", "e.g. --mfu 0.5, or --mfu-from RUN")
    source = f"assumed (--mfu {mfu})"
    if mfu_from is not None:
        metrics = Path(mfu_from)
        metrics = RunLayout(metrics).metrics if metrics.is_dir() else metrics
        if not metrics.is_file():
            raise UsageError(f"--mfu-from {mfu_from}: no metrics.jsonl there", "pass a run folder or its metrics.jsonl")
        mfu, source = measured_mfu(metrics), f"measured in {metrics}"
    plan = make_plan(
        plan_inputs(config, Path(request.data_dir) if request.data_dir else None),
        model_shape(config, config_file),
        profile,
        gpu_kind(profile, request.gpu),
        mfu,
        source,
        total_tokens=parse_tokens(request.tokens) if request.tokens else None,
        eval_every=request.eval_every or 0,
        eval_profile=eval_profile,
    )
    width = max(len(label) for label, _ in render_plan(plan))
    for label, value in render_plan(plan):
        echo(f"{label:<{width}}  {value}")
    if request.json_path:
        write_json(request.json_path, plan.to_dict())
    return plan
