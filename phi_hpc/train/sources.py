"""Training data sources: where a run's token streams come from, opened on every rank.

The paper's recipe: concatenate every document into one array with ``<|endoftext|>`` between them and
slice it into 2048-token sequences. ``prepare`` already wrote that array (each document ends in EOS),
so a pretraining *source* is just the flat ``.bin`` of a manifest's train outputs, read zero-copy
through the page cache. A finetuning source is CodeExercises-style prompt/completion JSON lines,
tokenized once into the same shape plus a loss mask (prompt tokens do not count), and cached by a
content hash so a requeued job memory-maps instead of tokenizing again.

Split from :mod:`phi_hpc.train.data`, which decides the order and the batches: that needs only a
:class:`TokenSource`'s length and its sequences, never where the tokens were read from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phi_hpc.errors import UsageError


# --------------------------------------------------------------------------------------------- sources
class FlatTokens:
    """Several flat token arrays viewed as one (slices may straddle two arrays, copied only then)."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = [a for a in arrays if len(a)]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pieces, position = [], start
        while position < stop:
            array, offset = self.arrays[first], int(self.starts[first])
            end = min(stop, offset + len(array))
            pieces.append(array[position - offset : end - offset])
            position, first = end, first + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass
class TokenSource:
    """One blendable source: a flat token stream and, for finetuning, which tokens count in the loss."""

    name: str
    tokens: FlatTokens
    loss_mask: FlatTokens | None = None  # None: every token counts

    def num_sequences(self, seq_len: int) -> int:
        return len(self.tokens) // seq_len

    def sequence(self, index: int, seq_len: int) -> tuple[np.ndarray, np.ndarray | None]:
        start = index * seq_len
        mask = None if self.loss_mask is None else self.loss_mask.slice(start, start + seq_len)
        return self.tokens.slice(start, start + seq_len), mask


def _manifest_outputs(path: Path, split: str) -> list[Path]:
    """Prefixes of ``split`` in a prepare folder / manifest; a bare ``.bin/.idx`` prefix is its own train split."""
    manifest = path / "manifest.json" if path.is_dir() else path
    if manifest.name == "manifest.json" or manifest.suffix == ".json":
        if not manifest.is_file():
            raise UsageError(
                f"data.paths: {path} has no manifest.json",
                "run `phi-hpc prepare ... -o DIR` first, or give a .bin/.idx prefix",
            )
        try:
            outputs = json.loads(manifest.read_text(encoding="utf-8"))["outputs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{manifest}: not a prepare manifest ({exc})", "re-run phi-hpc prepare") from None
        return [manifest.parent / out["prefix"] for out in outputs if out.get("split", "train") == split]
    prefix = Path(str(path).removesuffix(".bin").removesuffix(".idx"))
    if not path.exists() and not Path(f"{prefix}.idx").exists():
        raise UsageError(f"data.paths: {path} does not exist", "point data.paths at the -o folder of phi-hpc prepare")
    if not Path(f"{prefix}.idx").is_file():
        raise UsageError(
            f"data.paths: {path} is neither a prepare folder, a manifest nor a .bin/.idx prefix",
            "point data.paths at the -o folder of phi-hpc prepare",
        )
    return [prefix] if split == "train" else []


def indexed_source(path: str | os.PathLike, split: str = "train") -> TokenSource | None:
    """The ``split`` outputs of a prepare run as one zero-copy source (None if it has none)."""
    from phi_hpc.data.indexed import IndexedDataset

    prefixes = _manifest_outputs(Path(path), split)
    if not prefixes:
        return None
    arrays = []
    for prefix in prefixes:
        try:
            arrays.append(IndexedDataset(prefix).tokens)
        except (OSError, ValueError) as exc:
            raise UsageError(f"data.paths: cannot read {prefix}.bin/.idx ({exc})", "re-run phi-hpc prepare") from None
    return TokenSource(name=str(path), tokens=FlatTokens(arrays))


# ---------------------------------------------------------------------------------- finetuning jsonl
def encode_prompt_completion(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], eos_id: int, mask_prompt: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One example as (tokens, loss mask): ``prompt + completion + EOS``, prompt masked if asked."""
    tokens = np.asarray([*prompt_ids, *completion_ids, eos_id], dtype=np.int64)
    mask = np.ones(len(tokens), dtype=np.uint8)
    if mask_prompt:
        mask[: len(prompt_ids)] = 0
    return tokens, mask


def _read_examples(path: Path, prompt_field: str, completion_field: str) -> Iterable[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: invalid JSON ({exc.args[0]})", "fix or remove that line") from None
            missing = [f for f in (prompt_field, completion_field) if not isinstance(record.get(f), str)]
            if missing:
                raise UsageError(
                    f"{path}:{number}: no string field {missing[0]!r}",
                    "set data.prompt_field / data.completion_field to the names this file uses",
                )
            yield record[prompt_field], record[completion_field]


def tokenize_jsonl(
    path: str | os.PathLike,
    tokenizer_path: str,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    mask_prompt: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A prompt/completion file as one packed stream of tokens and its loss mask."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    if eos_id is None:
        raise UsageError(
            f"data.tokenizer: {tokenizer_path} has no <|endoftext|> token", "use phi-1's codegen tokenizer"
        )
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32
    token_parts, mask_parts = [], []
    examples = _read_examples(Path(path), prompt_field, completion_field)
    while chunk := list(itertools.islice(examples, 4096)):  # bounded memory for CodeExercises-sized files
        prompts = tokenizer.encode_batch([p for p, _ in chunk], add_special_tokens=False)
        completions = tokenizer.encode_batch([c for _, c in chunk], add_special_tokens=False)
        for prompt, completion in zip(prompts, completions):
            tokens, mask = encode_prompt_completion(prompt.ids, completion.ids, eos_id, mask_prompt)
            token_parts.append(tokens.astype(dtype))
            mask_parts.append(mask)
    if not token_parts:
        raise UsageError(f"{path}: no examples", "give a JSON-lines file with one prompt/completion per line")
    return np.concatenate(token_parts), np.concatenate(mask_parts)


def jsonl_cache_key(
    path: str | os.PathLike, tokenizer_path: str, prompt_field: str, completion_field: str, mask_prompt: bool
) -> str:
    """Content hash of everything the tokenized stream depends on."""
    from phi_hpc.fileio import sha256_file

    parts = [sha256_file(path), sha256_file(tokenizer_path), prompt_field, completion_field, str(mask_prompt)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def jsonl_source(
    path: str | os.PathLike,
    tokenizer_path: str,
    cache_dir: Path,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    mask_prompt: bool = True,
    build: bool = True,
) -> TokenSource:
    """A finetuning source, tokenized once into ``cache_dir`` (memory-mapped afterwards).

    Only one rank should ``build``; the others call with ``build=False`` after a barrier.
    """
    if not Path(path).is_file():
        raise UsageError(f"data.paths: {path} does not exist", "give a prompt/completion JSON-lines file")
    key = jsonl_cache_key(path, tokenizer_path, prompt_field, completion_field, mask_prompt)
    tokens_file, mask_file = cache_dir / f"{key}.tokens.npy", cache_dir / f"{key}.mask.npy"
    if build and not (tokens_file.is_file() and mask_file.is_file()):
        from phi_hpc.fileio import atomic_write

        tokens, mask = tokenize_jsonl(path, tokenizer_path, prompt_field, completion_field, mask_prompt)
        for target, array in ((mask_file, mask), (tokens_file, tokens)):
            with atomic_write(target, "wb") as handle:
                np.save(handle, array)
    tokens = np.load(tokens_file, mmap_mode="r")
    mask = np.load(mask_file, mmap_mode="r")
    return TokenSource(name=str(path), tokens=FlatTokens([tokens]), loss_mask=FlatTokens([mask]))


# -------------------------------------------------------------------------------------------- loading
def load_sources(data, cache_dir: Path, is_main: bool, barrier) -> tuple[list[TokenSource], list[TokenSource]]:
    """The train and validation sources of ``data`` (a :class:`~phi_hpc.train.config.DataConfig`); called
    on every rank. jsonl files are tokenized once, by rank 0, into ``cache_dir``; the others wait at
    ``barrier`` and memory-map the cache."""
    if data.format == "indexed":
        train_sources = [indexed_source(path, "train") for path in data.paths]
        missing = [p for p, s in zip(data.paths, train_sources) if s is None]
        if missing:
            raise UsageError(f"data.paths: {missing[0]} has no train split", "check its manifest.json outputs")
        return train_sources, [s for s in (indexed_source(p, "validation") for p in data.paths) if s is not None]

    def load(paths, build):
        return [
            jsonl_source(
                p, data.tokenizer, cache_dir, data.prompt_field, data.completion_field, data.mask_prompt, build=build
            )
            for p in paths
        ]

    if is_main:
        load([*data.paths, *data.validation_paths], build=True)
    barrier()
    return load(data.paths, build=False), load(data.validation_paths, build=False)
