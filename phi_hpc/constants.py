"""Values two stages must agree on, defined once (standard library only: login nodes import this).

* :data:`EXIT_PREEMPTED`: the trainer exits with it after saving a checkpoint on SIGUSR2/SIGTERM, and
  the job wrapper (:mod:`phi_hpc.launch.task`) requeues the job when it sees it.
* :data:`DEFAULT_PROFILE`: the commands' ``--profile`` default, and ``load_profile``'s.
* Slurm's job states, in the three groups the launch code asks about (see each name).
"""

from __future__ import annotations

DEFAULT_PROFILE = "a100x8"  # the cluster profile of submit, plan and doctor when --profile is not given

EXIT_PREEMPTED = 75  # EX_TEMPFAIL, "try again later": checkpoint saved, run me again

# Every state in which a job has ended and will not run again by itself.
SLURM_TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "LOST",
    }
)
# Ended without success, a cancellation included: what `status` explains with the attempt's reason and exit
# code, and a dependency that ended so cancels (afterok) the jobs waiting on it.
SLURM_UNSUCCESSFUL_STATES = SLURM_TERMINAL_STATES - {"COMPLETED"}
# Ended by a failure, worst first: an array whose elements ended differently shows the worst one and names its
# elements. CANCELLED is not a failure here: an array with cancelled (but no failed) elements shows CANCELLED.
SLURM_FAILURE_ORDER = ("OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "TIMEOUT", "PREEMPTED", "FAILED", "LOST")
SLURM_FAILURE_STATES = frozenset(SLURM_FAILURE_ORDER)
