"""Next-token cross-entropy, plain (from logits) and fused with the output head (from hidden states).

The plain loss is the reference and what evaluation uses. Training uses the fused one: for phi-1 at
micro-batch 8 x 2048 the logits are 16384 x 51200, 1.7 GB in bf16, 3.4 GB more as an fp32 copy, and as
much again for their gradient. :class:`ChunkedHeadLoss` instead computes ``hidden @ W^T + b`` and
its log-sum-exp a chunk of rows at a time (fp32 only for that chunk), keeps one fp32 number per row,
and in the backward recomputes each chunk's logits (one more head GEMM, about 2% of phi-1's step
FLOPs) to form ``softmax - onehot`` and the three gradients. Peak extra memory: one chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_ROWS = 2048  # 2048 x 51200 fp32 = 400 MiB per chunk on phi-1; big enough for full-speed GEMMs


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels[:, t+1]`` at position t, -100 at the last position, flattened (transformers' convention)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy, transformers' convention: ``logits[:, t]`` predicts ``labels[:, t+1]``.

    Labels equal to -100 (masked prompts, padding) are ignored. ``mean`` averages over the tokens
    that count; if none count it is 0 (with a zero gradient) rather than transformers' NaN, so a
    fully masked micro-batch cannot poison a run. In fp32 whatever the model's dtype, because a bf16
    log-softmax over 51200 classes loses the small differences training is made of.
    """
    # Shift the labels, not the logits: slicing [B, T, V] logits would copy the largest tensor of
    # the step; the last position gets label -100 instead.
    targets = shifted_labels(labels)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    total = F.cross_entropy(flat_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return _reduce(total, targets, reduction)


def fused_causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         labels: torch.Tensor, reduction: str = "mean", chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """``causal_lm_loss(hidden @ weight.T + bias, labels)`` without the logits tensor (see module doc)."""
    targets = shifted_labels(labels)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = ChunkedHeadLoss.apply(flat, weight, bias, targets, chunk_rows)
    return _reduce(total, targets, reduction)


def _reduce(total: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    counted = (targets != IGNORE_INDEX).sum()
    return total / counted.clamp(min=1)


def _wide(dtype: torch.dtype) -> torch.dtype:
    """fp32 for 16-bit models (and fp32 ones); fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(hidden, weight, bias).to(_wide(hidden.dtype))


class ChunkedHeadLoss(torch.autograd.Function):
    """Sum over rows of ``-log softmax(h W^T + b)[target]`` (rows with target -100 count 0), in chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows):
        rows = hidden.shape[0]
        lse = torch.empty(rows, dtype=_wide(hidden.dtype), device=hidden.device)
        total = torch.zeros((), dtype=_wide(hidden.dtype), device=hidden.device)
        for start in range(0, rows, chunk_rows):
            end = min(rows, start + chunk_rows)
            logits = _chunk_logits(hidden[start:end], weight, bias)
            chunk_lse = torch.logsumexp(logits, dim=-1)
            lse[start:end] = chunk_lse
            target = targets[start:end]
            counted = target != IGNORE_INDEX
            picked = logits.gather(1, target.clamp(min=0)[:, None]).squeeze(1)
            total += torch.where(counted, chunk_lse - picked, 0.0).sum()
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.has_bias, ctx.chunk_rows = bias is not None, chunk_rows
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        wide = _wide(weight.dtype)
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device)
        grad_bias = torch.zeros(weight.shape[0], dtype=wide, device=weight.device) if ctx.has_bias else None
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            end = min(hidden.shape[0], start + ctx.chunk_rows)
            logits = _chunk_logits(hidden[start:end], weight, bias)
            target = targets[start:end]
            counted = (target != IGNORE_INDEX)
            # d(lse - logit[target]) / d logits = softmax - onehot; rows that do not count get 0
            grad = torch.exp(logits - lse[start:end, None])
            grad.scatter_add_(1, target.clamp(min=0)[:, None], -torch.ones_like(grad[:, :1]))
            grad = (grad * (counted[:, None] * grad_total)).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = grad @ weight
            # each chunk's product in the model's dtype (tensor cores), the sum over chunks in fp32
            grad_weight += (grad.t() @ hidden[start:end]).to(wide)
            if grad_bias is not None:
                grad_bias += grad.to(wide).sum(0)
        grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias.to(bias.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None
