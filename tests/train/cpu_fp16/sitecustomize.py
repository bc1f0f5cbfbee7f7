"""Test-only: decide whether DeepSpeed's CPU accelerator claims fp16 (``PHI_HPC_TEST_CPU_FP16=on|off``).

DeepSpeed accepts fp16 on a CPU only where oneDNN has fp16 kernels (AVX512-FP16 or AMX: recent Intel
CPUs); AMD EPYCs, where CI runs, have none, and DeepSpeed then refuses fp16 at start-up. torch still
computes fp16 on any CPU, in software, which is all the loss-scaling test needs: it checks DeepSpeed's
fp16 optimizer wiring (skipped steps, scale back-off, the LR schedule), not fp16 speed. ``off`` makes
any CPU look like one without fp16, for the test of the one-line error phi-hpc gives there.
Put on PYTHONPATH of the training processes only; it does nothing unless the variable is set.
"""

import os

_MODE = os.environ.get("PHI_HPC_TEST_CPU_FP16")
if _MODE in ("on", "off"):
    from deepspeed.accelerator import cpu_accelerator

    cpu_accelerator.CPU_Accelerator.is_fp16_supported = lambda self: _MODE == "on"
