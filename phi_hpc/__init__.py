"""phi-hpc: reproduce the phi-1 recipe (data -> DeepSpeed training -> HumanEval/MBPP) on Slurm.

This top-level module stays import-light on purpose: login-node commands (``--help``, ``status``,
``logs``, ``cancel``) import it, and must never pay for torch or deepspeed.
"""

__version__ = "0.1.0"
