"""DeepSpeed training of phi models: ``phi-hpc train CONFIG`` (see :mod:`phi_hpc.train.trainer`).

Submodules are imported where needed; this file stays empty so ``phi-hpc --help`` imports no torch.
"""
