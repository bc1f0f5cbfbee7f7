"""From a :class:`~phi_hpc.train.config.TrainConfig` to a DeepSpeed engine: JSON, parameter groups, LR.

Kept apart from the training loop because this is the part people tune and read: which DeepSpeed
settings a YAML key becomes, which parameters get weight decay, what the learning rate is at step i.
"""

from __future__ import annotations

import math
from typing import Any

from phi_hpc.config import merge
from phi_hpc.errors import UsageError
from phi_hpc.train.config import TrainConfig

QUIET_STEPS = 10**9  # DeepSpeed's own periodic prints: we log our own line


def deepspeed_config(config: TrainConfig, world_size: int, device_type: str) -> dict[str, Any]:
    """The DeepSpeed JSON for this config and world size (also written to ``RUN/deepspeed.json``)."""
    ds = config.deepspeed
    optim = config.optim
    accumulation = config.batch.accumulation_steps(world_size)
    params: dict[str, Any] = {
        "lr": optim.lr,
        "betas": list(optim.betas),
        "eps": optim.eps,
        "weight_decay": optim.weight_decay,
    }
    if optim.torch_adam:
        params["torch_adam"] = True
        fused = optim.fused if optim.fused is not None else device_type == "cuda"
        if fused:
            params["fused"] = True
    out: dict[str, Any] = {
        "train_batch_size": config.batch.global_size,
        "train_micro_batch_size_per_gpu": config.batch.micro_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": optim.grad_clip,
        "optimizer": {"type": "AdamW", "params": params},
        "zero_optimization": {"stage": ds.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": QUIET_STEPS,
        "wall_clock_breakdown": False,
    }
    if ds.precision == "bf16":
        out["bf16"] = {"enabled": True}
    elif ds.precision == "fp16":
        out["fp16"] = {
            "enabled": True,
            "loss_scale": 0,  # 0 = dynamic
            "initial_scale_power": ds.initial_scale_power,
            "loss_scale_window": ds.loss_scale_window,
            "hysteresis": ds.hysteresis,
            "min_loss_scale": ds.min_loss_scale,
        }
    accumulate = grad_accum_dtype(ds.zero_stage, ds.precision, ds.grad_accum_dtype, accumulation)
    if accumulate is not None:
        out["data_types"] = {"grad_accum_dtype": accumulate}
    if accumulate == "fp32" and ds.precision == "bf16":
        # ZeRO 1 + bf16 all-reduces its fp32 sums in the model dtype unless told otherwise: that rounds
        # every step's gradient to 8 bits once more. fp32 doubles those bytes, ~40 ms a step for phi-1 on
        # NVLink against ~15 s of compute (Megatron reduces bf16 gradients in fp32 too).
        out["communication_data_type"] = "fp32"
    return merge(out, ds.extra)


def grad_accum_dtype(zero_stage: int, precision: str, requested: str, accumulation: int) -> str | None:
    """DeepSpeed's ``data_types.grad_accum_dtype`` for this run: "fp32" under bf16/fp16, or None (fp32 runs).

    Without it, DeepSpeed 0.19.8 sums the micro-batches of a step in the model's 16-bit precision
    (``param.grad``, see ``runtime/zero/stage_1_and_2.py``); 16 micro-batches of phi-1 then lose about
    three bits of every gradient. With it, ZeRO 1 + bf16 uses DeepSpeed's ``BF16_Optimizer`` (fp32
    gradient buffers) and ZeRO 1/2 + fp16 and ZeRO 2 + bf16 accumulate in a separate fp32 buffer
    (``gradient_accumulation_dtype``). Without ZeRO (stage 0) DeepSpeed refuses that mix
    (``engine._do_optimizer_sanity_check``: "unsupported mix"), so there 16-bit accumulation is only
    allowed when asked for by name, or when there is nothing to accumulate.
    """
    if precision == "fp32":
        return None
    if requested == "model":
        return precision
    if zero_stage == 0:
        if accumulation == 1:
            return None  # one micro-batch per step: nothing is summed
        raise UsageError(
            f"deepspeed.zero_stage=0 with precision {precision} and {accumulation} micro-batches per step "
            f"would accumulate gradients in {precision} (DeepSpeed has no fp32 accumulation without ZeRO)",
            "use deepspeed.zero_stage=1 (fp32 accumulation), or --set deepspeed.grad_accum_dtype=model "
            "to accept 16-bit accumulation",
        )
    return "fp32"


def check_precision(device_type: str, precision: str) -> None:
    """fp16 on a CPU needs oneDNN's fp16 kernels (recent Intel CPUs); elsewhere DeepSpeed refuses it deep
    inside ``initialize`` with a traceback. Say so in one line before anything starts."""
    if device_type != "cpu" or precision != "fp16":
        return
    from deepspeed.accelerator import get_accelerator

    if not get_accelerator().is_fp16_supported():
        raise UsageError(
            "deepspeed.precision=fp16: this CPU has no fp16 kernels (DeepSpeed's CPU accelerator "
            "needs oneDNN fp16: AVX512-FP16 or AMX)",
            "use --set deepspeed.precision=bf16 or fp32 on CPUs; fp16 is the GPU recipe",
        )


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """Decay the matrices (and embeddings); never biases or LayerNorm gains, which decay would pull to 0."""
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, peak: float, warmup: int, total: int, kind: str, min_lr: float = 0.0) -> float:
    """Learning rate of optimizer update number ``step`` (0-based).

    Linear warmup reaches the peak at the end of update ``warmup - 1``; afterwards the rate decays
    linearly (phi-1) or along a half cosine to ``min_lr`` at the last update, or stays (``constant``).
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if kind == "constant":
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return min_lr + (peak - min_lr) * (1.0 - progress)
    if kind == "cosine":
        return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def scheduler_factory(config: TrainConfig):
    """A callable DeepSpeed turns into the run's LR scheduler (a LambdaLR; its position is checkpointed)."""
    schedule, peak = config.schedule, config.optim.lr

    def factor(step: int) -> float:
        return lr_at(step, peak, schedule.warmup_steps, config.steps, schedule.kind, schedule.min_lr) / peak

    def build(optimizer):
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(optimizer, factor)

    return build


def loss_scale(engine) -> float:
    """The current dynamic loss scale under fp16; 1.0 otherwise."""
    optimizer = engine.optimizer
    for name in ("cur_scale", "loss_scale"):
        value = getattr(optimizer, name, None)
        if isinstance(value, (int, float)):
            return float(value)
        if value is not None and hasattr(value, "item"):
            return float(value.item())
    scaler = getattr(optimizer, "loss_scaler", None)
    if scaler is not None and getattr(scaler, "cur_scale", None) is not None:
        return float(scaler.cur_scale)
    return 1.0


def grad_norm(engine) -> float | None:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None


def unclipped_grad_norm(module) -> float:
    """L2 norm of all gradients (call after the all-reduce, before the optimizer clips them)."""
    import torch

    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
