"""Parameter and FLOP arithmetic for phi models, without building them.

Convention (the one behind "MFU" in the PaLM paper, appendix B, and most training reports):

    training FLOPs per token = 6 * N  +  12 * num_layers * hidden_size * seq_len

* ``N`` counts the parameters that take part in matrix multiplies: everything except the input
  embedding (a table lookup). The untied ``lm_head`` *is* a matmul and is counted. Biases and
  LayerNorms are counted too (they are <0.1% and keep N a plain sum).
* ``6 N``: 2 FLOPs per multiply-add in the forward pass, twice that in the backward pass.
* ``12 L d T``: the two attention matmuls (QK^T and PV), each 2 * d * T FLOPs per token per layer
  forward, times 3 for forward+backward, counted as if attention were NOT causal (the usual
  convention; a causal kernel does about half that work).
* Activation recomputation (checkpointing) is NOT counted: it is overhead, not model FLOPs, which
  is exactly why MFU is the honest number and "hardware FLOPs utilisation" is not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # arithmetic only: importable without torch (e.g. on a login node)
    from phi_hpc.model.phi import PhiConfig

# Dense (no sparsity) peak tensor-core throughput per GPU, FLOP/s, for bf16/fp16.
PEAK_FLOPS = {
    "a100": 312e12,
    "h100": 989e12,  # SXM; the PCIe card is 756e12
    "h200": 989e12,
}


def parameter_count(config: PhiConfig) -> int:
    """Exact number of parameters of :class:`~phi_hpc.model.phi.PhiForCausalLM` (embedding included)."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    layernorm = 2 * d
    attention = 4 * (d * d + d)  # q, k, v, dense, each with a bias
    mlp = (d * f + f) + (f * d + d)
    per_layer = layernorm + attention + mlp
    embedding = v * d
    head = d * v + v
    return embedding + config.num_layers * per_layer + layernorm + head


def matmul_parameter_count(config: PhiConfig) -> int:
    """Parameters that cost FLOPs: all but the input embedding."""
    return parameter_count(config) - config.vocab_size * config.hidden_size


def training_flops_per_token(config: PhiConfig, seq_len: int) -> float:
    """Model FLOPs to train on one token at context ``seq_len`` (forward + backward; see module doc)."""
    attention = 12 * config.num_layers * config.hidden_size * seq_len
    return float(6 * matmul_parameter_count(config) + attention)


def tokens_per_second_for_mfu(
    config: PhiConfig, seq_len: int, peak_flops: float, num_gpus: int, mfu: float = 0.5
) -> float:
    """Throughput ``num_gpus`` GPUs of ``peak_flops`` each must sustain to reach ``mfu``."""
    return mfu * peak_flops * num_gpus / training_flops_per_token(config, seq_len)


def peak_flops_for_device(device_name: str) -> float | None:
    """Peak bf16 FLOP/s for a GPU name such as ``torch.cuda.get_device_name()``; None if unknown
    (then MFU is reported as null rather than guessed)."""
    name = device_name.lower()
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            if key == "h100" and "pcie" in name:
                return 756e12
            return flops
    return None
