"""Evaluation: HumanEval/MBPP problems (``tasks``), the OS-level sandbox that runs completions
(``sandbox`` + ``zygote``), pass@k scoring (``score``) and the ``phi-hpc eval`` commands."""
