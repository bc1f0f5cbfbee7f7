"""Child process of test_grad_accum.py: DeepSpeed bf16 on the CPU, gradients of 16 micro-batches.

Prints one JSON line: for each (ZeRO stage, grad_accum_dtype), the relative error of DeepSpeed's
accumulated gradient (what the optimizer steps with) against the same bf16 micro-batch gradients
summed in fp32 by hand, and the error a sum in bf16 would have (the failure the test guards against).
It runs as its own process because ``deepspeed.init_distributed`` is once per process.
"""

from __future__ import annotations

import json
import os
import sys

ACCUMULATION = 16


def relative_error(got, reference) -> float:
    return max(float((g - r).norm() / r.norm()) for g, r in zip(got, reference))


def accumulated_gradients(engine, model) -> list:
    """The fp32 (or bf16) gradient DeepSpeed will step with, per parameter of ``model``, at the boundary."""
    from deepspeed.utils import safe_get_full_grad

    return [safe_get_full_grad(p).float() for p in model.parameters()]


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
    import deepspeed
    import torch

    from phi_hpc.train.config import BatchConfig, DeepSpeedConfig, TrainConfig
    from phi_hpc.train.engine import deepspeed_config

    deepspeed.init_distributed("gloo", auto_mpi_discovery=False)
    torch.manual_seed(0)
    inputs = [torch.randn(2, 64).bfloat16() for _ in range(ACCUMULATION)]

    def fresh_model():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 64))

    def loss_of(model, x):
        return model(x).float().pow(2).mean()

    # Reference: the bf16 gradient of each micro-batch (loss / 16, as DeepSpeed scales it), summed in fp32.
    reference_model = fresh_model().bfloat16()
    fp32_sum = [torch.zeros_like(p, dtype=torch.float32) for p in reference_model.parameters()]
    bf16_sum = [torch.zeros_like(p) for p in reference_model.parameters()]
    for x in inputs:
        reference_model.zero_grad()
        (loss_of(reference_model, x) / ACCUMULATION).backward()
        for total, low, p in zip(fp32_sum, bf16_sum, reference_model.parameters()):
            total += p.grad.float()
            low += p.grad
    report = {"bf16_sum_error": relative_error([b.float() for b in bf16_sum], fp32_sum), "runs": []}
    for stage, accum in ((1, "fp32"), (2, "fp32"), (1, "model")):
        config = TrainConfig(
            batch=BatchConfig(global_size=2 * ACCUMULATION, micro_size=2),
            deepspeed=DeepSpeedConfig(zero_stage=stage, precision="bf16", grad_accum_dtype=accum),
        )
        ds_config = deepspeed_config(config, 1, "cpu")
        model = fresh_model()
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
        for index, x in enumerate(inputs):
            engine.backward(loss_of(engine, x))
            if index < ACCUMULATION - 1:
                engine.step()  # not a boundary: no update yet
        report["runs"].append(
            {
                "zero_stage": stage,
                "grad_accum_dtype": accum,
                "deepspeed_json": {k: ds_config.get(k) for k in ("data_types", "communication_data_type")},
                "error": relative_error(accumulated_gradients(engine, engine.module), fp32_sum),
            }
        )
        engine.destroy()
    print("PROBE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
