"""Next-token cross-entropy, plain (from logits) and fused with the output head (from hidden states).

The plain loss is the reference and what evaluation uses. Training uses the fused one: for phi-1 at
micro-batch 8 x 2048 the logits are 16384 x 51200, 1.7 GB in bf16, 3.4 GB more as an fp32 copy, and as
much again for their gradient. :class:`ChunkedHeadLoss` instead computes ``hidden @ W^T + b``, its
log-sum-exp and (when training) its gradients a chunk of rows at a time, fp32 only for that chunk.
Peak extra memory: one chunk plus fp32 gradients of the hidden states and the head.
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


def fused_causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    reduction: str = "mean",
    chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """``causal_lm_loss(hidden @ weight.T + bias, labels)`` without the logits tensor (see module doc)."""
    targets = shifted_labels(labels)
    flat = hidden.reshape(-1, hidden.shape[-1])
    want_grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (flat, weight, bias))
    total = ChunkedHeadLoss.apply(flat, weight, bias, targets, chunk_rows, want_grads)
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
    """Sum over rows of ``-log softmax(h W^T + b)[target]`` (rows with target -100 count 0), in chunks.

    When gradients are wanted they are formed in the same pass (as Liger-Kernel's fused linear
    cross-entropy does): each chunk's logits are used once for the loss and ``softmax - onehot``, the
    chunk's contributions to the three gradients are accumulated in fp32, and the logits are freed.
    The backward then only scales them by the incoming gradient: no second head GEMM, so the fused
    loss costs the FLOPs of the plain one and the memory of one chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows, want_grads):
        wide = _wide(hidden.dtype)
        total = torch.zeros((), dtype=wide, device=hidden.device)
        grad_hidden = torch.empty(hidden.shape, dtype=wide, device=hidden.device) if want_grads else None
        grad_weight = torch.zeros(weight.shape, dtype=wide, device=weight.device) if want_grads else None
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=wide, device=weight.device) if want_grads and bias is not None else None
        )
        for start in range(0, hidden.shape[0], chunk_rows):
            end = min(hidden.shape[0], start + chunk_rows)
            logits = _chunk_logits(hidden[start:end], weight, bias)
            target = targets[start:end]
            counted = target != IGNORE_INDEX
            safe_target = target.clamp(min=0)[:, None]
            lse = torch.logsumexp(logits, dim=-1)
            total += torch.where(counted, lse - logits.gather(1, safe_target).squeeze(1), 0.0).sum()
            if not want_grads:
                continue
            # d(lse - logit[target]) / d logits = softmax - onehot; rows that do not count get 0
            grad = logits.sub_(lse[:, None]).exp_()
            grad.scatter_add_(1, safe_target, -torch.ones_like(grad[:, :1]))
            grad = grad.mul_(counted[:, None]).to(hidden.dtype)  # the GEMMs in the model's dtype
            grad_hidden[start:end] = grad @ weight
            grad_weight += (grad.t() @ hidden[start:end]).to(wide)
            if grad_bias is not None:
                grad_bias += grad.to(wide).sum(0)
        ctx.save_for_backward(*(t for t in (grad_hidden, grad_weight, grad_bias) if t is not None))
        ctx.has_bias = bias is not None
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = list(ctx.saved_tensors)
        if not saved:
            raise RuntimeError("fused_causal_lm_loss: gradients were not formed (called under no_grad)")
        grad_hidden, grad_weight = saved[0], saved[1]
        grad_bias = saved[2] if ctx.has_bias else None
        scale = grad_total.to(grad_hidden.dtype)
        grads = [
            (grad_hidden * scale).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None,
            (grad_weight * scale).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None,
            (grad_bias * scale).to(ctx.dtypes[2]) if grad_bias is not None and ctx.needs_input_grad[2] else None,
        ]
        return (*grads, None, None, None)
