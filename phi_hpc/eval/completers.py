"""The model side of ``eval run``: prompts in, ``n`` completions each out, cut at the stop sequences.

:class:`Completer` is the one interface :mod:`phi_hpc.eval.run` decodes through, so tests can pass a
completer that returns reference solutions and prove the merge/score/write path without a model.
:class:`ModelCompleter` is the real one: our decoder (:mod:`phi_hpc.model.generate`) on weights that
:func:`load_model_completer` puts on this rank's device. torch and tokenizers are imported inside
the functions, so importing this module (``eval run --help``) stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from phi_hpc.errors import UsageError
from phi_hpc.eval.config import EvalRunConfig
from phi_hpc.eval.model_source import ResolvedModel


class Completer(Protocol):
    """Turns prompts into ``n`` completions each, already cut at the stop sequences.

    ``progress(k)`` is called as ``k`` more sequences finish (for the progress bar). ``keys`` are the
    prompts' global problem indices: sampling is seeded by them, so a rank draws for its share of
    the problems exactly what a single process would.
    """

    def complete(
        self,
        prompts: list[str],
        stop_sequences: Sequence[str],
        progress: Callable[[int], None] | None = None,
        keys: Sequence[int] | None = None,
    ) -> list[list[str]]: ...


class ModelCompleter:
    """Our decoder (:mod:`phi_hpc.model.generate`) on a loaded model."""

    def __init__(self, model, tokenizer, config: EvalRunConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config

    def complete(
        self,
        prompts: list[str],
        stop_sequences: Sequence[str],
        progress: Callable[[int], None] | None = None,
        keys: Sequence[int] | None = None,
    ) -> list[list[str]]:
        from phi_hpc.model.generate import GenerationConfig, generate_completions

        c = self.config
        generation = GenerationConfig(
            max_new_tokens=c.max_new_tokens,
            greedy=c.greedy,
            temperature=c.temperature,
            top_p=c.top_p,
            n=c.n,
            seed=c.seed,
            stop_sequences=list(stop_sequences),
            batch_size=c.batch_size,
        )
        return generate_completions(
            self.model, self.tokenizer, prompts, generation, progress=progress, prompt_keys=keys
        )

    def context_warning(self, prompts: list[str]) -> str | None:
        """Prompts that would run past the positions the model was built for (its output there is noise)."""
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if not limit or not prompts:
            return None
        longest = max(len(ids) for ids in (e.ids for e in self.tokenizer.encode_batch(prompts)))
        too_long = longest + self.config.max_new_tokens
        if too_long <= limit:
            return None
        return (
            f"the longest prompt ({longest} tokens) + --max-new-tokens {self.config.max_new_tokens} exceeds "
            f"the model's max_position_embeddings ({limit}); lower --max-new-tokens"
        )


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def load_model_completer(
    config: EvalRunConfig, model: ResolvedModel, tokenizer_path: Path, local_rank: int
) -> tuple[ModelCompleter, dict]:
    """Load weights + tokenizer on this rank's device (GPU ``local_rank`` of the node, else the CPU);
    returns the completer and what was loaded."""
    import torch
    from tokenizers import Tokenizer

    from phi_hpc.model.hf import load_pretrained

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    device = f"cuda:{local_rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    dtype = _torch_dtype(config.dtype, device)
    network = load_pretrained(str(model.model_dir), dtype=dtype, device=device)
    network.eval()
    vocab = getattr(getattr(network, "config", None), "vocab_size", None)
    if vocab is not None and tokenizer.get_vocab_size() > vocab:
        raise UsageError(
            f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model only {vocab}",
            "pass the --tokenizer the model was trained with",
        )
    info = {"tokenizer": str(tokenizer_path), "device": device, "dtype": str(dtype).removeprefix("torch.")}
    return ModelCompleter(network, tokenizer, config), info
