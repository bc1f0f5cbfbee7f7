"""The training configuration: one typed tree that fully determines a run.

Everything that changes the loss curve lives here (seed included), and the resolved tree is written to
``RUN/config.yaml`` so any run can be repeated or resumed exactly. Loading is strict (see
:mod:`phi_hpc.config`): a typo in ``configs/pretrain.yaml`` fails on the login node, not after a day
in the queue.

Batch arithmetic follows DeepSpeed: ``global_batch = micro_batch x accumulation x world_size``. The
config fixes the global batch (the paper's hyperparameter) and the micro-batch (what fits in
memory); accumulation is derived from the world size at start-up, so the same YAML trains on one CPU
or on 4 nodes x 8 GPUs with the same optimisation.

This module imports :class:`~phi_hpc.model.phi.PhiConfig` and therefore torch; light callers (submit,
status) read ``RUN/config.yaml`` as plain YAML instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phi_hpc.errors import UsageError
from phi_hpc.model.phi import PhiConfig


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how they become fixed-length training sequences.

    ``format: indexed`` (pretraining): ``paths`` are ``prepare`` output folders (or their
    ``manifest.json``, or a bare ``.bin/.idx`` prefix). Their ``train`` outputs are concatenated
    (documents already end in EOS) and sliced into ``seq_len`` blocks; their ``validation`` outputs
    give the validation loss. Several paths are blended by ``weights`` (default: by token count,
    i.e. plain concatenation).

    ``format: jsonl`` (finetuning, CodeExercises style): ``paths`` are JSON-lines files with a prompt
    and a completion per line, tokenized with ``tokenizer``; ``mask_prompt`` keeps prompt tokens
    out of the loss. Examples are packed the same way, EOS after each completion.
    """

    format: Literal["indexed", "jsonl"] = "indexed"
    paths: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    seq_len: int = 2048
    validation_paths: list[str] = field(default_factory=list)  # jsonl only; indexed reads the manifests
    tokenizer: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    mask_prompt: bool = True

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.weights and len(self.weights) != len(self.paths):
            raise ValueError(f"{len(self.weights)} weights for {len(self.paths)} paths (give one weight per path)")
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise ValueError("weights must be non-negative and not all zero")


@dataclass(frozen=True)
class BatchConfig:
    """Sequences per optimizer step (``global_size``) and per forward pass on one device (``micro_size``)."""

    global_size: int = 1024
    micro_size: int = 8

    def accumulation_steps(self, world_size: int) -> int:
        per_step = self.micro_size * world_size
        if self.global_size % per_step:
            raise UsageError(
                f"batch.global_size={self.global_size} is not divisible by batch.micro_size x world size "
                f"= {self.micro_size} x {world_size}",
                "choose a micro batch and a process count whose product divides the global batch",
            )
        return self.global_size // per_step


@dataclass(frozen=True)
class OptimConfig:
    """AdamW. ``torch_adam`` uses torch's AdamW inside DeepSpeed (bit-exact resume; ``fused`` picks
    torch's fused CUDA kernel, auto = on GPUs); false uses DeepSpeed's FusedAdam/CPUAdam."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    torch_adam: bool = True
    fused: bool | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate: linear warmup from 0 to ``optim.lr``, then linear (the paper) or cosine decay to
    ``min_lr`` at the last step; ``constant`` holds the peak after warmup."""

    kind: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = 750
    min_lr: float = 0.0


@dataclass(frozen=True)
class DeepSpeedConfig:
    """Engine settings. ``precision: fp16`` uses dynamic loss scaling (the ``loss_scale_*`` knobs);
    ``extra`` is merged last into the generated DeepSpeed JSON, for settings this tree does not name
    (e.g. ``{zero_optimization: {overlap_comm: true}}``). ``grad_accum_dtype``: the micro-batches of a
    step are summed in fp32 (Megatron's and FSDP's choice; needs ZeRO 1 or 2 under bf16/fp16) or, if
    ``model``, in the model's precision (see :func:`phi_hpc.train.engine.grad_accum_dtype`)."""

    zero_stage: Literal[0, 1, 2] = 1
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    grad_accum_dtype: Literal["fp32", "model"] = "fp32"
    initial_scale_power: int = 16
    loss_scale_window: int = 1000
    hysteresis: int = 2
    min_loss_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointConfig:
    """``every`` steps, and ``every_minutes`` of wall time if > 0 (rank 0's clock, so all ranks agree;
    phi-1 at paper speed takes ~4 h per 1000 steps on 8 GPUs, too much to lose to a node failure),
    and at the end, and on preemption, into ``RUN/checkpoints/<step>/``; keep the
    last ``keep_last`` plus every multiple of ``keep_every`` (0: none). ``init_from``: a model folder
    (HF layout, e.g. a pretrain checkpoint step folder or microsoft/phi-1) whose weights start a fresh
    run, such as finetuning; ignored once the run has checkpoints of its own (then it resumes)."""

    every: int = 1000
    every_minutes: float = 0.0
    keep_last: int = 3
    keep_every: int = 0
    save_hf: bool = True
    resume: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep_last < 1 or self.keep_every < 0:
            raise ValueError("checkpoint.every and checkpoint.keep_last must be at least 1, keep_every at least 0")
        if self.every_minutes < 0:
            raise ValueError(f"checkpoint.every_minutes must be >= 0 (0: off), got {self.every_minutes}")


@dataclass(frozen=True)
class ValidationConfig:
    """Validation loss on the first ``batches`` global batches of held-out data every ``every`` steps (0: never)."""

    every: int = 1000
    batches: int = 8


@dataclass(frozen=True)
class LoggingConfig:
    """Console line every ``console_every`` steps (rank 0 only); TensorBoard when the package is
    installed and ``tensorboard`` is on. ``peak_tflops`` per device overrides the GPU table for MFU."""

    console_every: int = 10
    tensorboard: bool = True
    peak_tflops: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "runs/phi-1"
    seed: int = 1234
    steps: int = 36000
    model: PhiConfig = field(default_factory=PhiConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.data.seq_len > self.model.max_position_embeddings:
            raise ValueError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}"
            )


def load_train_config(path: str | None, overrides=(), check_paths: bool = True) -> TrainConfig:
    """``phi-hpc train CONFIG --set ...`` -> a validated :class:`TrainConfig`.

    ``check_paths`` also checks that the data and tokenizer files exist, so a wrong path fails in a
    second, before DeepSpeed starts (turn it off to inspect a config away from its data).
    """
    from phi_hpc.config import load_config

    config = load_config(TrainConfig, path, overrides)
    if not check_paths:
        return config
    if not config.data.paths:
        raise UsageError(
            f"{path or '--set'}: data.paths is empty",
            "point it at a prepare output folder, e.g. --set data.paths=[data/out]",
        )
    for data_path in [*config.data.paths, *config.data.validation_paths]:
        if not (Path(data_path).exists() or Path(f"{data_path}.idx").exists()):
            raise UsageError(
                f"{path or '--set'}: data path {data_path} does not exist",
                "set data.paths to a prepare output folder (phi-hpc prepare ... -o DIR)",
            )
    if config.data.format == "jsonl":
        if not config.data.tokenizer:
            raise UsageError(
                f"{path or '--set'}: data.format=jsonl needs data.tokenizer (a tokenizer.json, a folder or a hub id)",
                "e.g. --set data.tokenizer=microsoft/phi-1",
            )
        # A hub id becomes its cached file here, on the login node: the job itself never downloads.
        from phi_hpc.fetch import resolve_tokenizer

        local = resolve_tokenizer(config.data.tokenizer, f"{path or '--set'}: data.tokenizer")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, tokenizer=str(local.absolute())))
    return config
