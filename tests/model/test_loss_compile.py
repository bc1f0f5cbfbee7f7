"""The fused loss, the compiled block and the pinned SDPA kernels (issue 11, points 3, 6 and 7)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from phi_hpc.model.loss import causal_lm_loss, fused_causal_lm_loss
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM
from tests.conftest import REPO_ROOT as REPO

SMALL = PhiConfig(
    vocab_size=256,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=256,
    rotary_dim=8,
    max_position_embeddings=64,
    attn_dropout=0.0,
    resid_dropout=0.0,
)


@pytest.mark.parametrize("chunk_rows", [1, 7, 4096])
def test_fused_loss_equals_the_plain_one_in_value_and_gradient(chunk_rows):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 40, 32, generator=generator, requires_grad=True)
    weight = torch.randn(300, 32, generator=generator, requires_grad=True)
    bias = torch.randn(300, generator=generator, requires_grad=True)
    labels = torch.randint(0, 300, (3, 40), generator=generator)
    labels[1, 5:30] = -100  # a masked prompt
    plain = causal_lm_loss(torch.nn.functional.linear(hidden, weight, bias), labels)
    fused = fused_causal_lm_loss(hidden, weight, bias, labels, chunk_rows=chunk_rows)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for got, want in zip(
        torch.autograd.grad(fused, (hidden, weight, bias)), torch.autograd.grad(plain, (hidden, weight, bias))
    ):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
    total = fused_causal_lm_loss(hidden, weight, bias, labels, reduction="sum")
    assert total.item() == pytest.approx(causal_lm_loss(hidden @ weight.T + bias, labels, reduction="sum").item())


def test_fused_loss_of_everything_masked_is_zero_with_zero_gradient():
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    loss = fused_causal_lm_loss(hidden, weight, None, torch.full((1, 6), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(hidden.grad) == 0 and torch.count_nonzero(weight.grad) == 0


def test_the_model_with_labels_returns_the_fused_loss_in_bf16_too():
    torch.manual_seed(0)
    model = PhiForCausalLM(SMALL)
    ids = torch.randint(0, 256, (2, 24))
    assert model(ids, labels=ids).item() == pytest.approx(causal_lm_loss(model(ids), ids).item(), rel=1e-5)
    half = model.to(torch.bfloat16)
    assert half(ids, labels=ids).item() == pytest.approx(causal_lm_loss(half(ids), ids).item(), rel=1e-2)


@pytest.mark.slow
def test_fused_loss_peaks_lower_than_the_plain_one():
    def peak(variant: str) -> int:
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "model" / "loss_memory_probe.py"), variant],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return int(proc.stdout.split("PEAK")[-1])

    plain, fused = peak("plain"), peak("fused")
    logits_bytes = 2048 * 32000 * 4
    assert plain >= logits_bytes, (plain, fused)  # the plain loss holds at least the whole logits once
    assert fused < plain / 3, (plain, fused)  # the fused one a few 64-row chunks


@pytest.mark.slow
def test_compiled_block_equals_eager_on_the_cpu():
    torch.manual_seed(0)
    eager = PhiForCausalLM(SMALL).train()
    compiled = PhiForCausalLM(SMALL.replace(compile=True)).train()
    compiled.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for model in (eager, compiled):
        loss = model(ids, labels=ids)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert compiled._compiled_blocks is not None
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # decoding with a cache uses the eager blocks (no recompile per step)
        logits, cache = compiled(ids, use_cache=True)
        assert torch.allclose(logits, eager(ids), atol=1e-5)


def test_sdpa_is_the_default_and_logs_the_kernel_that_ran(caplog):
    assert PhiConfig().attention == "sdpa" and PhiConfig().sdpa_kernels == "fast"
    model = PhiForCausalLM(SMALL)
    with caplog.at_level(logging.INFO, logger="phi_hpc.model"), torch.no_grad():
        model(torch.randint(0, 256, (1, 8)))
    assert "attention: sdpa on cpu float32 (kernel: " in caplog.text
    assert any("(kernel: " in path for path in model.attention_paths)


def test_math_kernel_only_when_asked_for(caplog):
    from phi_hpc.model.attention import AttentionPlan

    fast = AttentionPlan.build("sdpa", "fast", set())
    assert fast.sdpa_context(torch.device("cpu")) is None  # CPUs: torch's choice (no HBM to run out of)
    pinned = fast.sdpa_context(torch.device("cuda"))
    from torch.nn.attention import SDPBackend

    with pinned:  # what a GPU forward runs under: no math kernel to fall back to
        assert not torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    math_model = PhiForCausalLM(SMALL.replace(sdpa_kernels="math"))
    with caplog.at_level(logging.INFO, logger="phi_hpc.model"), torch.no_grad():
        math_model(torch.randint(0, 256, (1, 8)))
    assert "(kernel: math)" in caplog.text
    assert SDPBackend.MATH  # the enum this pin is made of exists in this torch
