"""Launching on Slurm: ``phi-hpc submit``, ``status``, ``logs``, ``cancel`` (see docs/cluster.md).

Modules: :mod:`~phi_hpc.launch.profiles` (cluster resources), :mod:`~phi_hpc.launch.executors`
(Slurm or local, sbatch parameters), :mod:`~phi_hpc.launch.submit` (run folder + submission),
:mod:`~phi_hpc.launch.task` (what runs in each task; its rank and rendezvous come from
:mod:`phi_hpc.distenv`), :mod:`~phi_hpc.launch.jobs` (squeue/sacct), :mod:`~phi_hpc.launch.watch`
(status), :mod:`~phi_hpc.launch.logs` (logs). Nothing here imports torch at module level.
"""
