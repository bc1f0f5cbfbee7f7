"""Child process of test_loss_compile.py: peak extra resident memory of one loss + backward.

``python loss_memory_probe.py plain|fused`` prints ``PEAK <bytes>``: the rise of the process's
resident high-water mark over the level reached after building the inputs, so each variant is
measured alone, in a fresh process, with the same inputs.

The mark is ``VmHWM``, reset just before the loss (``5`` into ``/proc/self/clear_refs``). Not
``ru_maxrss``: a process started from a big parent (pytest after many tests) starts with the
parent's high-water mark in it, which hid the rise entirely.
"""

from __future__ import annotations

import sys

import torch

from phi_hpc.model.loss import causal_lm_loss, fused_causal_lm_loss

ROWS, HIDDEN, VOCAB = 2048, 128, 32000  # fp32 logits: 2048 x 32000 x 4 = 250 MiB


def main() -> None:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, ROWS, HIDDEN, generator=generator, requires_grad=True)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator).mul_(0.02).requires_grad_()
    bias = torch.zeros(VOCAB, requires_grad=True)
    labels = torch.randint(0, VOCAB, (1, ROWS), generator=generator)
    # touch the gradient buffers both variants will need, so they are in the baseline
    hidden.grad, weight.grad, bias.grad = torch.zeros_like(hidden), torch.zeros_like(weight), torch.zeros_like(bias)
    before = high_water_kib(reset=True)
    if sys.argv[1] == "plain":
        loss = causal_lm_loss(torch.nn.functional.linear(hidden, weight, bias), labels)
    else:
        loss = fused_causal_lm_loss(hidden, weight, bias, labels, chunk_rows=64)
    loss.backward()
    print(f"PEAK {(high_water_kib() - before) * 1024}", flush=True)


def high_water_kib(reset: bool = False) -> int:
    """The resident high-water mark in KiB (``VmHWM``), after resetting it to the current RSS if asked."""
    if reset:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main()
