"""What ``submit`` fetches on the login node so that jobs never touch the network.

Compute nodes are usually offline. Every argument a job gets that names something downloadable (a
tokenizer hub id, MBPP) is resolved here, before anything is queued, and the job's argv gets the local
cached path instead: ``--tokenizer microsoft/phi-1`` becomes ``--tokenizer /home/u/.cache/.../tokenizer.json``
and ``--task mbpp`` gains ``--data mbpp=/home/u/.cache/phi-hpc/mbpp/mbpp.jsonl``. (Training configs are
resolved by :func:`phi_hpc.train.config.load_train_config`, which writes the local path into RUN/config.yaml.)
"""

from __future__ import annotations


def _option_values(argv: list[str], option: str) -> list[tuple[int, str]]:
    """(index of the value, value) for each ``--opt V`` or ``--opt=V`` in argv."""
    found = []
    for index, item in enumerate(argv):
        if item == option and index + 1 < len(argv):
            found.append((index + 1, argv[index + 1]))
        elif item.startswith(option + "="):
            found.append((index, item[len(option) + 1 :]))
    return found


def _replace(argv: list[str], index: int, option: str, value: str) -> None:
    argv[index] = (
        value if argv[index - 1] == option and not argv[index].startswith(option + "=") else f"{option}={value}"
    )


def localize_tokenizer(argv: list[str]) -> list[str]:
    """``--tokenizer SPEC`` -> ``--tokenizer LOCAL_FILE`` (a hub id is downloaded into the cache now)."""
    from phi_hpc.fetch import resolve_tokenizer

    argv = list(argv)
    for index, value in _option_values(argv, "--tokenizer"):
        _replace(argv, index, "--tokenizer", str(resolve_tokenizer(value).absolute()))
    return argv


def localize_eval_args(argv: list[str]) -> list[str]:
    """``eval run`` arguments with the tokenizer and every MBPP task's data as local, cached files."""
    from phi_hpc.eval.tasks import MBPP_FILES, fetch_mbpp

    argv = localize_tokenizer(argv)
    tasks = [t.strip() for _, value in _option_values(argv, "--task") for t in value.split(",") if t.strip()]
    tasks = tasks or ["humaneval"]
    given = [value for _, value in _option_values(argv, "--data")]
    named = {value.split("=", 1)[0] for value in given if "=" in value}
    unnamed = len(tasks) == 1 and any("=" not in value for value in given)
    for task in tasks:
        if task in MBPP_FILES and task not in named and not unnamed:
            argv += ["--data", f"{task}={fetch_mbpp(MBPP_FILES[task]).absolute()}"]
    return argv
