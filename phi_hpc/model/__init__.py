"""The phi-1 model, its FLOP arithmetic, Hugging Face interop and batched generation.

Import the submodules directly (``phi_hpc.model.phi``, ``.flops``, ``.hf``, ``.generate``); this
package file stays empty so ``phi-hpc --help`` never imports torch through it.
"""
