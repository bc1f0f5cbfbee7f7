"""What a training process builds before its first step: the data streams, the DeepSpeed engine (with
the initial weights of ``checkpoint.init_from``), the metrics writer, and the settings a resume changed.

Split from :mod:`phi_hpc.train.trainer`, which runs the steps: each builder here runs once, takes the
config and this process's place in the job (rank, world size, device, run folder) as arguments and
returns what the loop uses, so the loop's module reads as the loop and these can be called alone (a
test loads initial weights without a process group). The only waits are DeepSpeed's own start-up and
the ``barrier`` handed to :func:`build_data` (rank 0 tokenizes finetuning files, the others wait).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from phi_hpc.fileio import write_json
from phi_hpc.run_layout import RunLayout
from phi_hpc.train.config import TrainConfig

# PhiConfig fields that must agree between an init_from checkpoint and the run's model.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "rotary_dim",
    "rope_theta",
    "layer_norm_eps",
)

Say = Callable[[str], None]  # prints on rank 0 only (the trainer's ``say``)


def changed_settings(saved: dict | None, config: TrainConfig) -> list[str]:
    """``key: before -> now`` for each setting that differs from the checkpoint's config. Resuming with
    other settings is allowed (a longer run, another LR), but never silent: the trainer says these."""
    from phi_hpc.config import flatten, to_dict

    if saved is None:
        return []
    before, now = flatten(saved), flatten(to_dict(config))
    return [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]


def build_data(config: TrainConfig, env, data_cache: Path, is_main: bool, barrier: Callable[[], None], say: Say):
    """This rank's training stream and its validation batches (None when there is nothing to validate on)."""
    from phi_hpc.train.data import TrainingData, ValidationData
    from phi_hpc.train.sources import load_sources

    data, batch = config.data, config.batch
    train_sources, validation_sources = load_sources(data, data_cache, is_main, barrier)
    train = TrainingData(
        train_sources,
        data.weights,
        data.seq_len,
        config.seed,
        batch.global_size,
        batch.micro_size,
        env.rank,
        env.world_size,
    )
    validation = None
    if config.validation.every > 0 and validation_sources:
        validation = ValidationData(
            validation_sources,
            data.seq_len,
            config.validation.batches * batch.global_size,
            batch.micro_size,
            env.rank,
            env.world_size,
        )
        if len(validation) == 0:
            say("validation data is shorter than one micro-batch per rank: no validation loss")
            validation = None
    return train, validation


def build_engine(config: TrainConfig, env, device_type: str, layout: RunLayout, say: Say, init_weights: bool):
    """The DeepSpeed engine around a fresh model (initial weights from ``checkpoint.init_from`` when
    ``init_weights``), with its gradient accumulation steps and whether the loop must measure the
    gradient norm itself: ``(engine, accumulation, measure_own_grad_norm)``."""
    import deepspeed
    import torch

    from phi_hpc.model.phi import PhiForCausalLM
    from phi_hpc.train.engine import deepspeed_config, parameter_groups, scheduler_factory

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = PhiForCausalLM(config.model)
    if init_weights and config.checkpoint.init_from:
        load_initial_weights(model, config.checkpoint.init_from, say)
    ds_config = deepspeed_config(config, env.world_size, device_type)
    if env.rank == 0:
        write_json(layout.deepspeed_config, ds_config)
    accumulation = ds_config["gradient_accumulation_steps"]
    # DeepSpeed reports the gradient norm from its ZeRO/fp16/bf16 optimizers only; plain fp32 without
    # ZeRO clips and forgets it, so there we measure it ourselves (same all-reduced gradients).
    measure_own_grad_norm = config.deepspeed.zero_stage == 0 and config.deepspeed.precision == "fp32"
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=parameter_groups(model, config.optim.weight_decay),
        lr_scheduler=scheduler_factory(config),
        config=ds_config,
    )
    accumulate = ds_config.get("data_types", {}).get("grad_accum_dtype")
    if accumulate not in (None, "fp32") and accumulation > 1:
        say(
            f"note: gradients of the {accumulation} micro-batches are summed in {accumulate} "
            "(deepspeed.grad_accum_dtype=model); the default fp32 sum matches fp32 runs more closely"
        )
    say(
        f"{env.world_size} process(es) ({env.source}, {device_type}), "
        f"ZeRO {config.deepspeed.zero_stage}, {config.deepspeed.precision}, global batch "
        f"{config.batch.global_size} = {config.batch.micro_size} x {accumulation} accumulation "
        f"x {env.world_size}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    return engine, accumulation, measure_own_grad_norm


def load_initial_weights(model, source: str, say: Say) -> None:
    """Copy a checkpoint's weights into ``model``; its architecture must match, dropout need not."""
    from phi_hpc.errors import UsageError
    from phi_hpc.model.hf import load_pretrained
    from phi_hpc.run_layout import find_checkpoint

    folder = find_checkpoint(source).folder
    if not (folder / "config.json").is_file():
        raise UsageError(
            f"checkpoint.init_from: {source} is not a model folder (no config.json)",
            "give a checkpoint step folder, a run folder, or a Hugging Face phi folder",
        )
    pretrained = load_pretrained(folder)
    for name in ARCHITECTURE_FIELDS:  # dropout, attention kernel etc. are this run's choice
        if getattr(pretrained.config, name) != getattr(model.config, name):
            raise UsageError(
                f"checkpoint.init_from: {folder} has {name}={getattr(pretrained.config, name)}, "
                f"the config says {getattr(model.config, name)}",
                "use the model config the checkpoint was trained with",
            )
    model.load_state_dict(pretrained.state_dict())
    say(f"initial weights from {folder}")


def build_metrics(config: TrainConfig, layout: RunLayout, is_main: bool, device_type: str, world_size: int):
    """The metrics.jsonl writer (rank 0 writes), the throughput meter, and the FLOPs per token both use:
    ``(writer, throughput, flops_per_token)``."""
    from phi_hpc.model.flops import training_flops_per_token
    from phi_hpc.train.metrics import MetricsWriter, Throughput, device_peak_flops

    writer = MetricsWriter(
        layout.metrics,
        enabled=is_main,
        tensorboard_dir=layout.tensorboard if config.logging.tensorboard else None,
    )
    flops = training_flops_per_token(config.model, config.data.seq_len)
    peak = device_peak_flops(device_type, config.logging.peak_tflops)
    return writer, Throughput(flops, world_size, peak), flops
