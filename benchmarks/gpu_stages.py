"""The stages of ``benchmarks/gpu_check.py``, one per child process: ``python gpu_stages.py NAME``.

Each prints one line ``STAGE {json}`` with ``status`` (ok, failed, skipped), a one-line ``summary``
and its numbers. On a CUDA machine the shapes are phi-1's; on a CPU they are small, and the stages
that only mean something on a GPU say ``skipped``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import checkout  # noqa: F401 (beside this script: puts this checkout first on sys.path)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def phi_config(cuda: bool, **changes):
    """phi-1 itself on a GPU; a small model of the same architecture on a CPU."""
    from phi_hpc.model.phi import PhiConfig

    base = PhiConfig(attn_dropout=0.0, resid_dropout=0.0)
    if not cuda:
        base = base.replace(
            vocab_size=1024,
            hidden_size=128,
            num_layers=2,
            num_heads=2,
            intermediate_size=512,
            max_position_embeddings=256,
        )
    return base.replace(**changes)


# ------------------------------------------------------------------------------------------ stages
def stage_environment(cuda: bool) -> dict:
    import importlib.util

    import torch

    from phi_hpc.model.attention import flash_attn_version

    found = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for name in ("deepspeed", "transformers", "submitit", "zstandard", "triton"):
        if importlib.util.find_spec(name) is None:
            found[name] = None
            continue
        from importlib.metadata import version

        try:
            found[name] = version(name)
        except Exception:
            found[name] = "installed"
    version_found = flash_attn_version()
    found["flash_attn"] = ".".join(map(str, version_found)) if version_found else None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        found["gpu"] = props.name
        found["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        found["capability"] = f"{props.major}.{props.minor}"
    missing = [n for n in ("deepspeed", "transformers") if found[n] is None]
    summary = (
        f"torch {found['torch']}, CUDA {found['cuda']}, GPU {found.get('gpu', 'none')}, "
        f"flash-attn {found['flash_attn'] or 'absent'}, deepspeed {found['deepspeed'] or 'absent'}"
    )
    return {
        "status": "failed" if missing else "ok",
        "summary": summary + (f"; missing {missing}" if missing else ""),
        "versions": found,
    }


def _attention_case(plan, reference_plan, q, k, v, mask, grad_out):
    """Max abs error of ``plan`` and of the math kernel in the same dtype, against fp32 math."""
    import torch

    from phi_hpc.model.attention import attention

    errors = {}
    wide = [t.detach().float().requires_grad_() for t in (q, k, v)]
    want = attention(*wide, mask, 0.0, reference_plan)
    want_grads = torch.autograd.grad(want, wide, grad_out.float())
    for label, chosen in (("fast", plan), ("math_same_dtype", reference_plan)):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        got = attention(*inputs, mask, 0.0, chosen)
        grads = torch.autograd.grad(got, inputs, grad_out)
        errors[label] = {
            "forward": float((got.float() - want).abs().max()),
            "backward": max(float((g.float() - w).abs().max()) for g, w in zip(grads, want_grads)),
        }
    return errors


def stage_attention(cuda: bool) -> dict:
    import torch

    from phi_hpc.model.attention import AttentionPlan, flash_attn_version

    device = "cuda" if cuda else "cpu"
    heads, head_dim, length = (32, 64, 2048) if cuda else (4, 64, 128)
    dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.bfloat16, torch.float32]
    plans = {"sdpa": AttentionPlan.build("sdpa", "fast", set())}
    if cuda and flash_attn_version() is not None:
        plans["flash-attn"] = AttentionPlan.build("flash", "fast", set())
    reference = AttentionPlan.build("sdpa", "math", set())
    generator = torch.Generator(device=device).manual_seed(0)
    cases, worst_ratio, failures = [], 0.0, []
    shapes = {
        "train": (2, length, length, False),
        "decode": (8, 1, length, False),
        "decode-padded": (8, 1, length, True),
    }
    for dtype in dtypes:
        for shape_name, (batch, tq, tk, padded) in shapes.items():
            q = torch.randn(batch, heads, tq, head_dim, device=device, dtype=dtype, generator=generator)
            k = torch.randn(batch, heads, tk, head_dim, device=device, dtype=dtype, generator=generator)
            v = torch.randn(batch, heads, tk, head_dim, device=device, dtype=dtype, generator=generator)
            grad_out = torch.randn(batch, tq, heads, head_dim, device=device, dtype=dtype, generator=generator)
            mask = None
            if padded:
                mask = torch.ones(batch, 1, tq, tk, dtype=torch.bool, device=device)
                mask[:, :, :, : tk // 8] = False  # left padding, as in batched generation
            for plan_name, plan in plans.items():
                errors = _attention_case(plan, reference, q, k, v, mask, grad_out)
                kernels = sorted(plan.seen)
                plan.seen.clear()
                plan._noted.clear()
                # the fused kernel may differ from fp32 by at most a few times what the math kernel does
                bound = {kind: 4 * errors["math_same_dtype"][kind] + 2e-3 for kind in ("forward", "backward")}
                ok = all(errors["fast"][kind] <= bound[kind] for kind in bound)
                worst_ratio = max(worst_ratio, *(errors["fast"][kind] / bound[kind] for kind in bound))
                entry = {
                    "dtype": str(dtype).replace("torch.", ""),
                    "shape": shape_name,
                    "path": plan_name,
                    "kernels": kernels,
                    "errors": errors,
                    "ok": ok,
                }
                cases.append(entry)
                if not ok:
                    failures.append(f"{plan_name} {shape_name} {entry['dtype']}")
    ran = sorted({k for case in cases for k in case["kernels"]})
    summary = (
        f"{len(cases) - len(failures)}/{len(cases)} cases within 4x the math kernel's error; kernels: " + "; ".join(ran)
    )
    return {"status": "failed" if failures else "ok", "summary": summary, "failures": failures, "cases": cases}


def _hf_pair(config, dtype, device):
    """transformers' PhiForCausalLM and ours, same weights (ours imported from theirs)."""
    import torch
    import transformers

    from phi_hpc.model.hf import config_to_hf, state_dict_from_hf
    from phi_hpc.model.phi import PhiForCausalLM

    # the product's own export of the config (what a published checkpoint's config.json holds)
    hf_config = transformers.PhiConfig(**config_to_hf(config, eos_token_id=None), pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: phi-1 initialised on a CPU takes a minute
        theirs = transformers.PhiForCausalLM(hf_config)
        ours = PhiForCausalLM(config)
    with torch.no_grad():  # spread the logits so greedy decoding has clear winners
        for param in theirs.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    theirs.config._attn_implementation = "sdpa"
    # the importer transformers checkpoints go through, in memory instead of via a folder on disk
    ours.load_state_dict(state_dict_from_hf(theirs.state_dict()))
    return ours.to(dtype=dtype).eval(), theirs.to(dtype=dtype).eval()


@contextlib.contextmanager
def _exact_matmuls():
    """TF32 off for the block: fp32 comparisons on a GPU then mean fp32 (TF32 keeps 10 mantissa bits)."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _logits(model, ids, hf: bool):
    import torch

    with torch.no_grad():
        out = model(ids)
        return (out.logits if hf else out).float()


def stage_model(cuda: bool) -> dict:
    """Same weights, same tokens: our logits against transformers' in fp32 (TF32 off), where they must
    agree to rounding, and in bf16, where each model is measured against the fp32 reference and ours
    may not be much further from it than transformers' own bf16 run (random weights through 24 layers
    amplify bf16 rounding, so the two bf16 runs differ from each other by more than either's error)."""
    import torch

    from phi_hpc.model.loss import causal_lm_loss

    device = "cuda" if cuda else "cpu"
    config = phi_config(cuda)
    ours, theirs = _hf_pair(config, torch.float32, device)
    ids = torch.randint(
        0,
        config.vocab_size,
        (2, 512 if cuda else 64),
        device=device,
        generator=torch.Generator(device=device).manual_seed(1),
    )
    with _exact_matmuls():
        mine, reference = _logits(ours, ids, False), _logits(theirs, ids, True)
    scale = float(reference.abs().max())
    diff = float((mine - reference).abs().max())
    loss_mine, loss_theirs = causal_lm_loss(mine, ids).item(), causal_lm_loss(reference, ids).item()
    agree = float((mine.argmax(-1) == reference.argmax(-1)).float().mean())
    del mine
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    error = {
        "ours": float((_logits(ours, ids, False) - reference).abs().mean()),
        "transformers": float((_logits(theirs, ids, True) - reference).abs().mean()),
    }
    fp32_ok = diff <= 1e-4 * max(scale, 1.0) and abs(loss_mine - loss_theirs) <= 1e-4
    bf16_ok = error["ours"] <= 1.5 * error["transformers"] + 1e-6
    return {
        "status": "ok" if fp32_ok and bf16_ok else "failed",
        "summary": f"fp32: max |logit diff| {diff:.3g} (logits up to {scale:.3g}), loss {loss_mine:.5f} vs "
        f"{loss_theirs:.5f}, argmax agreement {agree:.4f}; bf16 mean |error| against fp32: "
        f"{error['ours']:.3g} ours vs {error['transformers']:.3g} transformers",
        "fp32": {"max_logit_diff": diff, "logit_scale": scale, "losses": [loss_mine, loss_theirs], "argmax": agree},
        "bf16_mean_abs_error_vs_fp32": error,
        "parameters": ours.num_parameters(),
        "attention_paths": sorted(ours.attention_paths),
    }


def _init_single_process():
    import socket

    from phi_hpc.distenv import detect
    from phi_hpc.train.distributed import init_distributed, select_accelerator

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device_type = select_accelerator()
    init_distributed(detect(), device_type)
    return device_type


def _engine(config, device_type):
    import deepspeed

    from phi_hpc.model.phi import PhiForCausalLM
    from phi_hpc.train.engine import deepspeed_config, parameter_groups, scheduler_factory

    model = PhiForCausalLM(config.model)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=parameter_groups(model, 0.1),
        lr_scheduler=scheduler_factory(config),
        config=deepspeed_config(config, 1, device_type),
    )
    return engine


def _train_config(cuda: bool, precision: str, micro: int, seq: int, accumulation: int, model=None, dropout=0.0):
    from phi_hpc.train.config import BatchConfig, DataConfig, DeepSpeedConfig, ScheduleConfig, TrainConfig

    model = model or phi_config(cuda, attn_dropout=dropout, resid_dropout=dropout)
    return TrainConfig(
        model=model,
        data=DataConfig(seq_len=seq),
        steps=100,
        batch=BatchConfig(global_size=micro * accumulation, micro_size=micro),
        schedule=ScheduleConfig(warmup_steps=2),
        deepspeed=DeepSpeedConfig(zero_stage=1, precision=precision),
    )


def _step(engine, config, step: int, device) -> float:
    """One optimizer step on deterministic random tokens (a function of the step number)."""
    import torch

    generator = torch.Generator().manual_seed(step)
    total = 0.0
    for _ in range(config.batch.global_size // config.batch.micro_size):
        ids = torch.randint(
            0, config.model.vocab_size, (config.batch.micro_size, config.data.seq_len), generator=generator
        ).to(device, non_blocking=True)
        loss = engine(ids, labels=ids)
        engine.backward(loss)
        engine.step()
        total += loss.detach().float()
    return float(total) / (config.batch.global_size // config.batch.micro_size)


def stage_deepspeed(cuda: bool, precision: str) -> dict:
    import torch

    from phi_hpc.model.flops import peak_flops_for_device, training_flops_per_token
    from phi_hpc.train.engine import loss_scale

    if precision == "fp16" and not cuda:
        return {"status": "skipped", "summary": "DeepSpeed has no fp16 on the CPU accelerator (GPU only)"}
    device_type = _init_single_process()
    micro, seq, accumulation, steps = (8, 2048, 2, 6) if cuda else (2, 64, 2, 3)
    config = _train_config(cuda, precision, micro, seq, accumulation)
    engine = _engine(config, device_type)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    losses = [_step(engine, config, 0, device), _step(engine, config, 1, device)]  # warm-up (and kernel choice)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _sync(cuda)
    started = time.perf_counter()
    losses += [_step(engine, config, step, device) for step in range(2, 2 + steps)]
    _sync(cuda)
    seconds = time.perf_counter() - started
    tokens_per_s = steps * config.batch.global_size * seq / seconds
    flops = training_flops_per_token(config.model, seq)
    peak = peak_flops_for_device(torch.cuda.get_device_name()) if cuda else None
    mfu = tokens_per_s * flops / peak if peak else None
    result = {
        "micro_batch": micro,
        "seq_len": seq,
        "accumulation": accumulation,
        "timed_steps": steps,
        "tokens_per_s": round(tokens_per_s, 1),
        "tflops": round(tokens_per_s * flops / 1e12, 2),
        "mfu": round(mfu, 4) if mfu else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss_scale": loss_scale(engine),
        "skipped_steps": int(engine.skipped_steps),
        "losses": [round(x, 4) for x in losses],
        "attention_paths": sorted(engine.module.attention_paths),
    }
    finite = all(x == x and abs(x) != float("inf") for x in losses)
    mfu_text = f"MFU {mfu:.1%}" if mfu else "MFU n/a (no GPU peak)"
    result.update(
        status="ok" if finite and engine.skipped_steps < len(losses) else "failed",
        summary=f"{precision}: {tokens_per_s:,.0f} tokens/s, {mfu_text}, peak "
        f"{result['peak_memory_gib']} GiB, loss scale {result['loss_scale']:g}, "
        f"{result['skipped_steps']} skipped, losses {result['losses'][0]} -> {result['losses'][-1]}",
    )
    return result


def stage_resume(cuda: bool) -> dict:
    import torch
    import torch.distributed as dist

    from phi_hpc.train.checkpoint import CheckpointManager

    device_type = _init_single_process()
    model = phi_config(cuda, attn_dropout=0.1, resid_dropout=0.1)
    if cuda:  # phi-1-small keeps the checkpoint (weights + Adam) at ~5 GB: seconds to write and read
        model = model.replace(hidden_size=1024, num_heads=16, intermediate_size=4096, num_layers=20)
    config = _train_config(cuda, "bf16", 4 if cuda else 2, 2048 if cuda else 64, 2, model=model)
    engine = _engine(config, device_type)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    torch.manual_seed(7)
    for step in range(2):
        _step(engine, config, step, device)
    with tempfile.TemporaryDirectory() as tmp:
        manager = CheckpointManager(Path(tmp), keep_last=2, rank=0, world_size=1, barrier=dist.barrier)
        saved = manager.save(2, engine, {"zero_stage": 1}, save_model=True)
        first = [_step(engine, config, step, device) for step in (2, 3)]
        manager.load(engine, saved)
        again = [_step(engine, config, step, device) for step in (2, 3)]
    exact = first == again
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(first, again))
    ok = worst <= 1e-3  # exact on CPUs and deterministic kernels; fused GPU kernels may use atomics
    return {
        "status": "ok" if ok else "failed",
        "bit_exact": exact,
        "max_relative_difference": worst,
        "losses_after_save": first,
        "losses_after_resume": again,
        "summary": f"{'bit-exact' if exact else f'within {worst:.2g} relative'} over 2 steps after a "
        f"checkpoint round trip (dropout 0.1, RNG restored)",
    }


def _padded(prompts, device):
    """Left-padded ids and attention mask for transformers' generate."""
    import torch

    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _greedy_runs(ours, theirs, prompts, new_tokens, device):
    """Two callables: our ``generate_tokens`` and transformers' ``generate``, greedy, new tokens only."""
    import torch

    from phi_hpc.model.generate import GenerationConfig, generate_tokens

    ids, mask = _padded(prompts, device)
    settings = GenerationConfig(max_new_tokens=new_tokens, batch_size=len(prompts))

    def run_ours():
        return [rows[0] for rows in generate_tokens(ours, prompts, settings)]

    def run_theirs():
        with torch.no_grad():
            out = theirs.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
                min_new_tokens=new_tokens,
            )
        return out[:, ids.shape[1] :].tolist()

    return {"ours": run_ours, "transformers": run_theirs}


def stage_generate(cuda: bool) -> dict:
    """Greedy outputs compared in fp32 (TF32 off), where they must match; speed timed in bf16 (on a
    random model bf16 rounding flips near-tied argmaxes, so bf16 outputs are not expected to match)."""
    import torch

    device = "cuda" if cuda else "cpu"
    batch, new_tokens, checked_tokens = (32, 128, 32) if cuda else (4, 8, 8)
    config = phi_config(cuda)
    ours, theirs = _hf_pair(config, torch.float32, device)
    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(64, 129, (batch,), generator=generator).tolist() if cuda else [12, 9, 16, 5]
    prompts = [torch.randint(1, config.vocab_size, (n,), generator=generator).tolist() for n in lengths]
    with _exact_matmuls():
        checked = {name: run() for name, run in _greedy_runs(ours, theirs, prompts, checked_tokens, device).items()}
    same = sum(a == b for a, b in zip(checked["ours"], checked["transformers"]))
    dtype = torch.bfloat16 if cuda else torch.float32
    runs = _greedy_runs(ours.to(dtype), theirs.to(dtype), prompts, new_tokens, device)
    timings = {}
    for name, run in runs.items():
        run()  # warm-up
        _sync(cuda)
        started = time.perf_counter()
        run()
        _sync(cuda)
        timings[name] = batch * new_tokens / (time.perf_counter() - started)
    ratio = timings["ours"] / timings["transformers"]
    return {
        "status": "ok" if same >= batch - 1 else "failed",
        "batch": batch,
        "new_tokens": new_tokens,
        "dtype": str(dtype),
        "tokens_per_s": {k: round(v, 1) for k, v in timings.items()},
        "speedup": round(ratio, 3),
        "identical_fp32_outputs": f"{same}/{batch} ({checked_tokens} tokens each)",
        "summary": f"{dtype}: {timings['ours']:,.0f} vs {timings['transformers']:,.0f} tokens/s ({ratio:.2f}x) at "
        f"batch {batch}; fp32: {same}/{batch} greedy outputs of {checked_tokens} tokens identical",
    }


def main() -> None:
    name = sys.argv[1]
    cuda = _cuda()
    try:
        if name == "environment":
            result = stage_environment(cuda)
        elif name.startswith("deepspeed-"):
            result = stage_deepspeed(cuda, name.split("-", 1)[1])
        else:
            result = {
                "attention": stage_attention,
                "model": stage_model,
                "resume": stage_resume,
                "generate": stage_generate,
            }[name](cuda)
    except Exception as error:  # the stage's failure is its result; the other stages still run
        result = {
            "status": "failed",
            "reason": f"{type(error).__name__}: {error}"[:500],
            "traceback_tail": traceback.format_exc()[-1500:],
        }
    result.setdefault("device", "cuda" if cuda else "cpu (small shapes: code paths proven, no speed claim)")
    print("STAGE " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
