"""Attention kernels of the phi model, chosen ONCE when the model is built (not per call).

* ``sdpa`` (the default; ``auto`` means the same): torch's ``scaled_dot_product_attention``. On CUDA
  it is pinned to the fused kernels (flash, memory-efficient, cuDNN) unless ``sdpa_kernels: any`` or
  ``math`` is asked for: the math kernel materialises ``B x H x T x T`` scores per layer (8 x 32 x
  2048 x 2048 fp32 = 4 GiB for phi-1) and would turn a dtype or mask problem into an out-of-memory
  error an hour later. With the pin, such a problem is an immediate "No available kernel" error.
* ``flash``: the flash-attn package (optional, CUDA, fp16/bf16, no padding mask; other calls use SDPA).
  Its version is checked at build: ``causal=True`` with fewer queries than keys (decoding with a
  cache) is aligned bottom-right only from 2.1, so older versions serve training shapes only.
* ``eager``: the textbook formula with an fp32 softmax, the reference the others are tested against.

The kernel that actually ran is logged once per distinct (path, device, dtype, shape kind), e.g.
``attention: sdpa on cuda bfloat16 (kernel: flash)``, and kept in ``model.attention_paths``. The
bookkeeping is skipped while ``torch.compile`` traces, so a compiled block has no graph break here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

log = logging.getLogger("phi_hpc.model")

FLASH_ATTN_DECODE_MIN = (2, 1)  # bottom-right causal alignment, what a KV cache needs
KERNEL_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def flash_attn_version() -> tuple[int, ...] | None:
    """The installed flash-attn version as a tuple, or None when it is absent (looked up at build only)."""
    if importlib.util.find_spec("flash_attn") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("flash_attn")
    except PackageNotFoundError:
        try:
            text = version("flash-attn")
        except PackageNotFoundError:
            return (0,)
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def flash_attn_available() -> bool:
    return flash_attn_version() is not None


@dataclass
class AttentionPlan:
    """Decided once per model: which path, which SDPA kernels, and what has been logged."""

    path: str  # "sdpa" | "flash" | "eager"
    sdpa_kernels: str = "fast"  # "fast" (flash/efficient/cuDNN on CUDA) | "any" | "math"
    flash_decode: bool = True  # flash-attn >= 2.1: decode shapes may use it too
    seen: set[str] = field(default_factory=set)
    _flash_func: object = None
    _noted: set = field(default_factory=set)

    @classmethod
    def build(cls, attention: str, sdpa_kernels: str, seen: set[str]) -> AttentionPlan:
        from phi_hpc.errors import UsageError

        if attention != "flash":
            return cls("eager" if attention == "eager" else "sdpa", sdpa_kernels, seen=seen)
        found = flash_attn_version()
        if found is None:
            raise UsageError(
                "model.attention=flash but flash-attn is not installed",
                "pip install flash-attn --no-build-isolation on a CUDA machine, or use model.attention=sdpa",
            )
        from flash_attn import flash_attn_func

        decode = found >= FLASH_ATTN_DECODE_MIN
        if not decode:
            log.warning(
                "flash-attn %s aligns causal masks top-left: decoding with a cache uses SDPA "
                "(upgrade to flash-attn >= 2.1 to use it there too)",
                ".".join(map(str, found)),
            )
        return cls("flash", sdpa_kernels, flash_decode=decode, seen=seen, _flash_func=flash_attn_func)

    def sdpa_context(self, device: torch.device):
        """The ``sdpa_kernel`` restriction for this device (None: torch's own choice)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if self.sdpa_kernels == "math":
            kernels = [SDPBackend.MATH]
        elif self.sdpa_kernels == "fast" and device.type == "cuda":
            kernels = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        else:
            return None
        return sdpa_kernel(kernels)


def _note(plan: AttentionPlan, path: str, q, k, v, mask, dropout: float, is_causal: bool) -> None:
    """Log the path (and for SDPA the kernel torch picks) the first time each kind of call is seen."""
    shape = "prefill" if q.shape[2] == k.shape[2] else "decode"
    key = f"{path} on {q.device.type} {str(q.dtype).replace('torch.', '')}"
    if (key, shape, mask is not None) in plan._noted:
        return
    plan._noted.add((key, shape, mask is not None))
    detail = ""
    if path == "sdpa":
        try:
            choice = torch._fused_sdp_choice(q, k, v, mask, dropout, is_causal)
            detail = f" (kernel: {KERNEL_NAMES.get(int(choice), str(choice))})"
        except Exception:  # private API: the log line just gets shorter
            detail = ""
    plan.seen.add(key + detail)
    log.info("attention: %s%s, %s%s", key, detail, shape, ", padding mask" if mask is not None else "")


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, plan: AttentionPlan
) -> torch.Tensor:
    """Softmax attention. q [B,H,Tq,D], k/v [B,H,Tk,D]; returns [B,Tq,H,D].

    ``mask`` is a boolean ``[B,1,Tq,Tk]`` (True = may attend) or None, meaning plain causal
    attention with the queries aligned to the END of the keys (what decoding with a cache needs).
    """
    tq, tk = q.shape[2], k.shape[2]
    path = plan.path
    if path == "flash" and not (
        q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and mask is None and (tq == tk or plan.flash_decode)
    ):
        path = "sdpa"  # padding masks, CPU/fp32 and (old flash-attn) decode shapes are outside flash-attn
    if path == "flash":
        if not torch.compiler.is_compiling():
            _note(plan, "flash", q, k, v, None, dropout, True)
        return plan._flash_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout, causal=True)
    if mask is None and tq != tk and tq > 1:
        mask = causal_mask(tq, tk, q.device)[None, None]
    if path == "sdpa":
        is_causal = mask is None and tq > 1
        if not torch.compiler.is_compiling():
            context = plan.sdpa_context(q.device)
            with context if context is not None else contextlib.nullcontext():
                _note(plan, "sdpa", q, k, v, mask, dropout, is_causal)  # the kernel under the same pin
        # While torch.compile traces, the pin is set around the compiled blocks instead (PhiForCausalLM):
        # the kernel is chosen at trace time, and no context manager has to live inside the graph.
        context = None if torch.compiler.is_compiling() else plan.sdpa_context(q.device)
        if context is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        else:
            with context:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        return out.transpose(1, 2)
    if not torch.compiler.is_compiling():
        _note(plan, "eager", q, k, v, mask, dropout, False)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is None and tq > 1:
        mask = causal_mask(tq, tk, q.device)[None, None]
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return (probs @ v).transpose(1, 2)


def causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """[Tq, Tk] boolean, query i (the (tk - tq + i)-th token) sees keys 0..tk - tq + i."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)
