"""phi-1, the model of "Textbooks Are All You Need", in one readable file.

The architecture is the one Microsoft published and transformers' ``PhiForCausalLM`` implements, so
checkpoints move between the two without loss (see :mod:`phi_hpc.model.hf`):

* token embedding -> N identical blocks -> final LayerNorm -> untied ``lm_head`` (with a bias);
* each block is *parallel* (GPT-J style): ONE LayerNorm feeds both attention and the MLP, and
  ``x + attention(ln(x)) + mlp(ln(x))`` is the output. Half the LayerNorms, and the two branches can
  overlap on a GPU;
* attention projections carry biases; rotary position embeddings touch only the first
  ``rotary_dim`` (32 of 64) dimensions of each head, in the NeoX "rotate half" layout;
* the MLP is d -> 4d -> d with the tanh approximation of GELU (``gelu_new`` in transformers).

Two deliberate differences from transformers' code, neither visible in the weights' meaning:

* q, k and v come from one fused ``qkv`` matmul (one GEMM instead of three; :mod:`~phi_hpc.model.hf`
  splits and joins the weights on export and import);
* GELU is torch's fused ``gelu(approximate="tanh")`` rather than five elementwise ops.

Attention is torch's SDPA by default, pinned on GPUs to its fused kernels; flash-attn on request;
or an explicit "eager" reference (:mod:`phi_hpc.model.attention`, decided once at build). The kernel
actually taken is logged once per distinct choice, because "why is this slow" often starts there.
``compile: true`` compiles each block with ``torch.compile`` (rotary, dropouts and residual adds
fused). The training loss is computed from the hidden states in row chunks, fused with the output
head (:mod:`phi_hpc.model.loss`), so the ``[B, T, 51200]`` logits never exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from phi_hpc.model.attention import AttentionPlan, attention, causal_mask, flash_attn_available  # noqa: F401 (re-exported)
from phi_hpc.model.loss import causal_lm_loss, fused_causal_lm_loss  # noqa: F401 (re-exported)

log = logging.getLogger("phi_hpc.model")

AttentionImpl = Literal["auto", "flash", "sdpa", "eager"]
_causal_mask = causal_mask


@dataclass(frozen=True)
class PhiConfig:
    """Shape and regularisation of a phi model. Defaults are phi-1 (1.3B) as trained in the paper.

    ``vocab_size`` is codegen-350M-mono's 50295 tokens padded to a multiple of 64 (51200) so the
    embedding and output GEMMs tile well on tensor cores.
    """

    vocab_size: int = 51200
    hidden_size: int = 2048
    num_layers: int = 24
    num_heads: int = 32
    intermediate_size: int = 8192
    rotary_dim: int = 32
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5
    # The paper trains with attention and residual dropout 0.1 (none on the embedding); the released
    # microsoft/phi-1 config.json has them at 0, which is what importing it gives.
    embd_dropout: float = 0.0
    attn_dropout: float = 0.1
    resid_dropout: float = 0.1
    initializer_range: float = 0.02
    # sdpa (default; "auto" is the same) | flash (flash-attn >= 2.1) | eager; sdpa_kernels: "fast" pins
    # SDPA on GPUs to flash/efficient/cuDNN, "any" lets torch choose, "math" forces the math kernel.
    attention: AttentionImpl = "sdpa"
    sdpa_kernels: Literal["fast", "any", "math"] = "fast"
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each block (training and full-sequence forwards)

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not (0 <= self.rotary_dim <= self.head_dim) or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even and within the head size {self.head_dim}, got {self.rotary_dim}")
        for name in ("embd_dropout", "attn_dropout", "resid_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.attention not in ("auto", "flash", "sdpa", "eager"):
            raise ValueError(f"attention must be auto, flash, sdpa or eager, got {self.attention!r}")
        if self.sdpa_kernels not in ("fast", "any", "math"):
            raise ValueError(f"sdpa_kernels must be fast, any or math, got {self.sdpa_kernels!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> PhiConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of every layer for the tokens seen so far, in preallocated buffers.

    Buffers are ``[batch, heads, capacity, head_dim]``; writing a step is an in-place copy, not a
    ``torch.cat`` of the whole history (which would make decoding quadratic in memory traffic).
    ``keep_rows`` drops finished sequences so they stop costing compute.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        shape = (batch, num_heads, max(capacity, 1), head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0  # tokens already stored (identical for every layer between forwards)

    @classmethod
    def for_model(
        cls, config: PhiConfig, batch: int, capacity: int, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        return cls(config.num_layers, batch, config.num_heads, config.head_dim, capacity, dtype, device)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's keys/values after the cached ones; return views of the whole history."""
        start, end = self.length, self.length + key.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.keys[layer][:, :, start:end] = key
        self.values[layer][:, :, start:end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (a 1-D index tensor), e.g. the unfinished sequences."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    def _grow(self, needed: int) -> None:
        new_capacity = max(needed, 2 * self.capacity)

        def grown(buffer: torch.Tensor) -> torch.Tensor:
            bigger = buffer.new_empty((*buffer.shape[:2], new_capacity, buffer.shape[3]))
            bigger[:, :, : self.length] = buffer[:, :, : self.length]
            return bigger

        self.keys = [grown(k) for k in self.keys]
        self.values = [grown(v) for v in self.values]


# --------------------------------------------------------------------------------------------------
# Rotary embeddings
# --------------------------------------------------------------------------------------------------


def rotary_cos_sin(
    position_ids: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the ``rotary_dim / 2`` rotation angles, ``[B, T, rotary_dim / 2]``, for positions ``[B, T]``.

    Angles are computed in fp32 and only then cast: in bf16, position 2000 times a frequency would
    already be off by whole radians.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, device=position_ids.device, dtype=torch.float32) / rotary_dim)
    )
    angles = position_ids[..., None].float() * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of each head; the rest pass through untouched.

    NeoX layout ("rotate half"): dimension i is paired with i + rotary_dim/2, not with its neighbour.
    ``x`` is ``[B, T, ..., D]`` and ``cos``/``sin`` ``[B, T, rotary_dim/2]``. Written as two
    half-width products and ONE concatenation (instead of rotate_half's extra cat and negation): the
    same numbers, bit for bit, in fewer passes over memory.
    """
    half = cos.shape[-1]
    if half == 0:
        return x
    shape = (*cos.shape[:2], *([1] * (x.dim() - 3)), half)
    cos, sin = cos.view(shape), sin.view(shape)
    # split, not slicing: the backward of a split is one concatenation, while each slice's backward
    # would zero-fill a gradient the size of all of x and copy into it.
    first, second, passthrough = x.split([half, half, x.shape[-1] - 2 * half], dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin, passthrough), dim=-1)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class PhiAttention(nn.Module):
    def __init__(self, config: PhiConfig, layer_index: int, plan: AttentionPlan):
        super().__init__()
        self.config = config
        self.layer_index = layer_index
        self.plan = plan  # shared by all layers of one model
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        heads, head_dim = self.config.num_heads, self.config.head_dim
        qk, v = self.qkv(x).view(batch, length, 3, heads, head_dim).split([2, 1], dim=2)
        qk = apply_rotary(qk, cos, sin)  # queries and keys rotated in one pass
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # -> [B, H, T, D] each
        v = v.squeeze(2).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)
        dropout = self.config.attn_dropout if self.training else 0.0
        out = attention(q, k, v, mask, dropout, self.plan)
        return self.dense(out.reshape(batch, length, self.config.hidden_size))


class PhiMLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class PhiBlock(nn.Module):
    """One LayerNorm, two branches in parallel, one residual sum."""

    def __init__(self, config: PhiConfig, layer_index: int, plan: AttentionPlan):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = PhiAttention(config, layer_index, plan)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        h = self.input_layernorm(x)
        attn_out = self.resid_dropout(self.self_attn(h, cos, sin, mask, cache))
        mlp_out = self.resid_dropout(self.mlp(h))
        return x + attn_out + mlp_out


class PhiBackbone(nn.Module):
    """Everything but the output head (named ``model`` in transformers' checkpoints)."""

    def __init__(self, config: PhiConfig, plan: AttentionPlan):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.embd_dropout)
        self.layers = nn.ModuleList(PhiBlock(config, i, plan) for i in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class PhiForCausalLM(nn.Module):
    """phi-1 with its language-model head. ``forward`` returns logits (and the cache if asked)."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        # Attention kernels actually used so far, e.g. {"sdpa on cuda bfloat16 (kernel: flash)"}: logged
        # when new, and recorded in a run's summary.
        self.attention_paths: set[str] = set()
        self.attention_plan = AttentionPlan.build(config.attention, config.sdpa_kernels, self.attention_paths)
        self.model = PhiBackbone(config, self.attention_plan)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.reset_parameters()
        # Compiled twins of the blocks (same parameters), for forwards without a KV cache: a cache's
        # growing length would recompile every decoding step. Not registered as submodules, so the
        # state dict keeps its names.
        self._compiled_blocks = [torch.compile(block) for block in self.model.layers] if config.compile else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02) weights, zero biases, unit LayerNorms (what transformers does)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if module.weight.device.type == "meta":
                    continue
                module.weight.normal_(0.0, self.config.initializer_range)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm) and module.weight.device.type != "meta":
                module.weight.fill_(1.0)
                module.bias.zero_()

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        weight = self.lm_head.weight
        return KVCache.for_model(self.config, batch, capacity, weight.dtype, weight.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        attention_mask: torch.Tensor | None = None,
        last_logits_only: bool = False,
        labels: torch.Tensor | None = None,
    ):
        """Logits ``[B, T, V]`` for ``input_ids`` ``[B, T]``.

        ``attention_mask`` (``[B, cached + T]``, 1 = real token, 0 = padding) is only needed for
        left-padded batches in generation; training sequences are packed and need none.
        ``use_cache`` returns ``(logits, cache)``; pass the cache back as ``past_key_values`` to
        continue where it left off. ``last_logits_only`` computes the head for the last position
        only (``[B, 1, V]``): a prompt's prefill in generation needs nothing else, and the head over
        51200 tokens is the single largest matmul of a small model. With ``labels`` the result is the
        mean next-token loss instead (:func:`~phi_hpc.model.loss.fused_causal_lm_loss`: the head and
        the cross-entropy in row chunks, no logits tensor).
        """
        batch, length = input_ids.shape
        cache = past_key_values
        if use_cache and cache is None:
            cache = self.new_cache(batch, length)
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device).expand(batch, length)

        x = self.model.embed_dropout(self.model.embed_tokens(input_ids))
        cos, sin = rotary_cos_sin(position_ids, self.config.rotary_dim, self.config.rope_theta, x.dtype)
        mask = None if attention_mask is None else padding_causal_mask(attention_mask, length)

        checkpointing = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        compiled = self._compiled_blocks is not None and cache is None
        pin = self.attention_plan.sdpa_context(x.device) if compiled else None
        with pin if pin is not None else contextlib.nullcontext():
            for block in self._compiled_blocks if compiled else self.model.layers:
                if checkpointing and cache is None:
                    from torch.utils.checkpoint import checkpoint

                    x = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
                else:
                    x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(length)
        if labels is not None:
            hidden = self.model.final_layernorm(x)
            return fused_causal_lm_loss(hidden, self.lm_head.weight, self.lm_head.bias, labels)
        if last_logits_only:
            x = x[:, -1:]
        logits = self.lm_head(self.model.final_layernorm(x))
        return (logits, cache) if use_cache else logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def padding_causal_mask(attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """Boolean ``[B, 1, Tq, Tk]``: causal, and never attending to padding keys.

    A padding *query* would then have nothing to attend to, and a fully masked softmax row is NaN,
    which would leak into the batch through nothing but bad luck. So every query may always see
    itself; the outputs at padding positions are garbage nobody reads.
    """
    keys = attention_mask.shape[1]
    causal = _causal_mask(query_length, keys, attention_mask.device)
    mask = causal[None] & attention_mask.bool()[:, None, :]
    diagonal = torch.zeros_like(causal)
    diagonal[torch.arange(query_length), torch.arange(keys - query_length, keys)] = True
    return (mask | diagonal[None])[:, None]
