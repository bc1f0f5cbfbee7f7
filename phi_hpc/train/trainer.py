"""The training loop: DeepSpeed engine, deterministic data, checkpoints, preemption, metrics.

One step = one global batch = ``accumulation`` micro-batches on every rank, one optimizer update.
At each step boundary the ranks exchange one small tensor (mean loss, "was I signalled?"), so a
SIGUSR2/SIGTERM that reached any rank makes all of them checkpoint and return at the same step:
Slurm sends the signal before preempting or killing a job, and the submit layer requeues it.

Resume is automatic: with checkpoints in ``RUN/checkpoints``, the run continues from ``latest``
(engine, optimizer, LR schedule, per-rank RNG, data position). What is exact and what is not:

* exact, always: the data order and position, the optimizer step count and LR schedule, the loss
  scale, the RNG streams (dropout masks), the weights and optimizer state as saved;
* bit-identical later steps: on CPUs (tested) and wherever every kernel is deterministic, with
  ``optim.torch_adam`` and the same world size;
* within a tolerance on GPUs: flash and memory-efficient attention backward kernels and NCCL
  reductions accumulate in an order that can vary from run to run (atomics), so the losses after a
  resume agree with the uninterrupted run's to ~1e-3 relative and then drift like two runs with the
  same seed (``benchmarks/gpu_check.py`` stage ``resume`` measures it).

fp16: a step whose gradients overflow is skipped (no update, loss scale lowered, ``skipped_steps``
in metrics.jsonl). DeepSpeed does not advance the LR schedule on it (``engine._take_model_step``),
so the schedule counts applied updates: a run with k skipped steps ends k updates short of the end
of its decay (``test_fp16_dynamic_loss_scaling_skips_overflows_and_backs_off``).

Checkpoints are written every ``checkpoint.every`` steps and every ``checkpoint.every_minutes``;
saves are synchronous (all ranks wait for the slowest writer; for phi-1 ZeRO-1 shards, seconds).

What a process builds before its first step (data, engine, initial weights, metrics writer) is
:mod:`phi_hpc.train.startup`; this module is the steps and what happens between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from phi_hpc.config import dump_yaml
from phi_hpc.constants import EXIT_PREEMPTED  # what the CLI returns so the job is requeued
from phi_hpc.fileio import write_json
from phi_hpc.run_layout import RunLayout
from phi_hpc.train.checkpoint import OnPublish, PreemptionFlag
from phi_hpc.train.config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    status: Literal["completed", "preempted"]
    step: int
    last_loss: float | None
    run_dir: str


def train(config: TrainConfig, on_publish: OnPublish | None = None) -> TrainResult:
    """Run (or resume) training as described by ``config``; every process of the job calls this.

    ``on_publish(step, step_dir)`` runs on rank 0 each time a checkpoint is published, before older
    ones are pruned (:class:`phi_hpc.train.checkpoint.CheckpointManager`).
    """
    from phi_hpc.distenv import detect
    from phi_hpc.train.distributed import init_distributed, select_accelerator
    from phi_hpc.train.engine import check_precision, grad_accum_dtype

    env = detect()
    accumulation = config.batch.accumulation_steps(env.world_size)  # a batch that does not split fails early
    ds = config.deepspeed
    grad_accum_dtype(ds.zero_stage, ds.precision, ds.grad_accum_dtype, accumulation)  # so does ZeRO 0 + bf16
    preemption = PreemptionFlag()
    preemption.install()  # first: a signal during the (slow) start-up still ends in a clean checkpoint
    try:
        device_type = select_accelerator()
        check_precision(device_type, ds.precision)
        init_distributed(env, device_type)
        return _Run(config, env, device_type, preemption, on_publish).execute()
    finally:
        preemption.uninstall()


class _Run:
    """The state of one training process between start-up and return (split into readable steps)."""

    def __init__(
        self,
        config: TrainConfig,
        env,
        device_type: str,
        preemption: PreemptionFlag,
        on_publish: OnPublish | None = None,
    ):
        import torch
        import torch.distributed as dist

        self.config, self.env, self.device_type, self.preemption = config, env, device_type, preemption
        self.on_publish = on_publish
        self.torch, self.dist = torch, dist
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if device_type == "cuda" else torch.device("cpu")
        )
        self.layout = RunLayout(config.run_dir)
        self.run_dir = self.layout.root
        self.is_main = env.rank == 0

    # ---------------------------------------------------------------- set-up
    def barrier(self) -> None:
        from phi_hpc.train.distributed import wait_barrier

        wait_barrier()  # its own timeout, not the training collectives' (issue 16)

    def say(self, message: str) -> None:
        if self.is_main:
            print(f"[train] {message}", flush=True)

    def execute(self) -> TrainResult:
        from phi_hpc.train.checkpoint import CheckpointManager
        from phi_hpc.train.startup import changed_settings

        config = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(config, self.layout.config)
        self.barrier()
        self.checkpoints = CheckpointManager(
            self.layout.checkpoints.directory,
            config.checkpoint.keep_last,
            self.env.rank,
            self.env.world_size,
            self.barrier,
            keep_every=config.checkpoint.keep_every,
            on_publish=self.on_publish,
        )
        self.checkpoints.remove_partials()
        resume_from = self.checkpoints.latest() if config.checkpoint.resume else None

        self._build(init_weights=resume_from is None)

        step = 0
        if resume_from is not None:
            state = self.checkpoints.load(self.engine, resume_from)
            self.train_data.sampler.load_state_dict(state["sampler"])
            step = int(state["step"])
            changed = changed_settings(state.get("config"), config)
            if changed:
                self.say("resuming with settings that differ from the checkpoint's: " + "; ".join(changed))
            self.say(f"resumed from {resume_from} at step {step} ({self.train_data.sampler.consumed} samples consumed)")
        else:
            self.torch.manual_seed(config.seed + self.env.rank)  # dropout differs per rank, reproducibly
        self.metrics.truncate_after(step)  # lines past the restart point (even all of them) are recomputed
        return self._loop(step, resumed_from=str(resume_from) if resume_from else None)

    def _build(self, init_weights: bool) -> None:
        """Data, engine and metrics, built by :mod:`phi_hpc.train.startup` (data first: a bad path fails
        before the slow engine start-up)."""
        from phi_hpc.train.startup import build_data, build_engine, build_metrics

        config, env = self.config, self.env
        self.train_data, self.validation_data = build_data(
            config, env, self.layout.data_cache, self.is_main, self.barrier, self.say
        )
        self.engine, self.accumulation, self.measure_own_grad_norm = build_engine(
            config, env, self.device_type, self.layout, self.say, init_weights
        )
        self.metrics, self.throughput, self.flops_per_token = build_metrics(
            config, self.layout, self.is_main, self.device_type, env.world_size
        )

    # ---------------------------------------------------------------- the loop
    def _loop(self, step: int, resumed_from: str | None) -> TrainResult:
        from phi_hpc.progress import progress_bar
        from phi_hpc.train.checkpoint import SaveClock, fault_step
        from phi_hpc.train.metrics import StepTimer, console_line

        config, engine = self.config, self.engine
        timer = StepTimer(self.device_type)
        last_loss, status, saved_step = None, "completed", None
        step_rates: list[float] = []  # tokens/s of this process's steps (the first, warming up, excluded)
        self.last_val_loss = None
        kill_at = fault_step("kill-at-step")
        step_delay = fault_step("sleep-per-step") or 0  # a deliberately slow trainer, for the tests
        self.save_clock = SaveClock(config.checkpoint.every_minutes)
        engine.train()
        with progress_bar(disable=None if self.is_main else True) as bar:
            task = bar.add_task("train", total=config.steps, completed=step)
            while step < config.steps:
                timer.start()
                lr = engine.get_lr()[0]
                last_loss, preempted, own_norm, time_due = self._train_step()
                step += 1
                record = self._step_record(step, last_loss, lr, own_norm, timer.stop())
                self.metrics.log(record)
                step_rates.append(record["tokens_per_s"])
                bar.update(task, completed=step)
                shown = step % config.logging.console_every == 0 or step in (1, config.steps) or preempted
                if self.is_main and shown:
                    print(console_line(record, config.steps), flush=True)
                if self._after_step(step, preempted or time_due, kill_at, step_delay):
                    saved_step = step
                if preempted:
                    status = "preempted"
                    self.say(f"preempted by a signal at step {step}: checkpoint saved, exiting for requeue")
                    break
        self.metrics.close()
        result = TrainResult(status=status, step=step, last_loss=last_loss, run_dir=str(self.run_dir))
        if self.is_main:
            self._write_summary(result, resumed_from, saved_step, step_rates)
        self.barrier()
        return result

    def _step_record(self, step: int, loss: float, lr: float, own_norm: float | None, seconds: float) -> dict:
        """The step's metrics.jsonl line (``own_norm``: the gradient norm where DeepSpeed does not report it)."""
        from phi_hpc.train.engine import grad_norm, loss_scale

        engine, tokens_per_step = self.engine, self.config.batch.global_size * self.config.data.seq_len
        return {
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm(engine) if own_norm is None else own_norm,
            "loss_scale": loss_scale(engine),
            "skipped_steps": int(engine.skipped_steps),
            **self.throughput.measure(tokens_per_step, seconds),
            "step_time_s": round(seconds, 4),
            **self.train_data.position(),
            "time": time.time(),
        }

    def _after_step(self, step: int, save_now: bool, kill_at: int | None, step_delay: float) -> bool:
        """Validation, the test faults (kill, slow step) and the checkpoint due at this step boundary, in
        this order (a kill at step N dies before N's checkpoint, like a crash); returns whether it saved.
        ``save_now``: a signal or rank 0's clock asked for a checkpoint."""
        from phi_hpc.train.checkpoint import die_now

        config = self.config
        if (
            config.validation.every
            and self.validation_data is not None
            and (step % config.validation.every == 0 or step == config.steps)
        ):
            self._validate(step)
        if kill_at == step:
            die_now()
        time.sleep(step_delay)
        if save_now or step % config.checkpoint.every == 0 or step == config.steps:
            self._save(step)
            self.save_clock.saved()
            return True
        return False

    def _write_summary(
        self, result: TrainResult, resumed_from: str | None, saved_step: int | None, step_rates: list[float]
    ) -> None:
        """RUN/summary.json (rank 0): how the run ended, where it resumed and last saved, and how fast it ran."""
        write_json(
            self.layout.summary,
            {
                "status": result.status,
                "step": result.step,
                "steps": self.config.steps,
                "last_loss": result.last_loss,
                "resumed_from": resumed_from,
                "last_checkpoint": saved_step,
                "world_size": self.env.world_size,
                "launcher": self.env.source,
                "device": self.device_type,
                "attention": sorted(getattr(self.engine.module, "attention_paths", ())),
                "flops_per_token": self.flops_per_token,
                "flops_convention": "6N + 12*L*d*T (phi_hpc.model.flops)",
                "consumed_samples": self.train_data.sampler.consumed,
                "last_val_loss": self.last_val_loss,
                "tokens_per_s": round(sum(step_rates[1:]) / len(step_rates[1:]), 2) if len(step_rates) > 1 else None,
                "time": time.time(),
            },
        )

    def _train_step(self) -> tuple[float, bool, float | None, bool]:
        """One global batch: every micro-batch forward and backward, one optimizer update.

        Returns the loss averaged over micro-batches and ranks, whether any rank was signalled, the
        gradient norm where we have to measure it, and whether rank 0's clock says a time-based
        checkpoint is due (loss, signal and clock share the step's one collective).
        """
        from phi_hpc.train.engine import unclipped_grad_norm

        torch, engine = self.torch, self.engine
        loss_sum = torch.zeros((), device=self.device)
        own_norm = None
        for input_ids, labels in self._on_device(self.train_data.next_step()):
            loss = engine(input_ids, labels=labels)  # head + loss fused in chunks: no [B, T, V] logits
            engine.backward(loss)  # DeepSpeed scales by 1/accumulation and all-reduces at the boundary
            if self.measure_own_grad_norm and engine.is_gradient_accumulation_boundary():
                own_norm = unclipped_grad_norm(engine.module)
            engine.step()  # the optimizer update happens on the last micro-batch only
            loss_sum += loss.detach().float()
        flags = [float(self.preemption.raised), float(self.is_main and self.save_clock.due())]
        shared = torch.cat([(loss_sum / self.accumulation).reshape(1), torch.tensor(flags, device=self.device)])
        self.dist.all_reduce(shared)
        values = shared.tolist()  # one device-to-host copy for the three numbers
        return values[0] / self.env.world_size, values[1] > 0, own_norm, values[2] > 0

    def _on_device(self, micro_batches):
        """(input_ids, labels) device tensors, each copy queued one micro-batch ahead of its use.

        On GPUs the host arrays go through pinned memory and are copied with ``non_blocking``: the
        copy of micro-batch i+1 overlaps the compute of micro-batch i instead of a synchronising
        pageable copy before each forward. (A whole next *step* is not prefetched: the sampler's
        position is what a checkpoint records, and it must not run ahead of the saved step.)
        """
        torch, cuda = self.torch, self.device_type == "cuda"

        def put(micro):
            pair = (torch.from_numpy(micro.input_ids), torch.from_numpy(micro.labels))
            if cuda:
                return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in pair)
            return pair

        upcoming = None
        for micro in micro_batches:
            if upcoming is not None:
                current, upcoming = upcoming, put(micro)
                yield current
            else:
                upcoming = put(micro)
        if upcoming is not None:
            yield upcoming

    def _save(self, step: int) -> None:
        from phi_hpc.config import to_dict

        state = {
            "sampler": self.train_data.sampler.state_dict(),
            "config": to_dict(self.config),
            "seed": self.config.seed,
            "zero_stage": self.config.deepspeed.zero_stage,
            "precision": self.config.deepspeed.precision,
        }
        path = self.checkpoints.save(step, self.engine, state, save_model=self.config.checkpoint.save_hf)
        self.say(f"checkpoint {path}")

    def _validate(self, step: int) -> None:
        from phi_hpc.model.loss import IGNORE_INDEX, shifted_labels

        torch, engine = self.torch, self.engine
        engine.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for input_ids, labels in self._on_device(self.validation_data):
                counted = (shifted_labels(labels) != IGNORE_INDEX).sum()
                totals[0] += engine(input_ids, labels=labels).double() * counted  # mean -> sum
                totals[1] += counted.double()
        engine.train()
        self.dist.all_reduce(totals)
        val_loss = (totals[0] / totals[1].clamp(min=1)).item()
        self.last_val_loss = val_loss
        self.metrics.log({"step": step, "val_loss": val_loss, "val_tokens": int(totals[1].item()), "time": time.time()})
        self.say(f"step {step}: validation loss {val_loss:.4f} over {int(totals[1].item()):,} tokens")


def main_exit_code(result: TrainResult) -> int:
    return EXIT_PREEMPTED if result.status == "preempted" else 0
