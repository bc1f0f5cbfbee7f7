"""Training data: token streams -> fixed-length sequences -> a blended, shuffled, resumable order.

The paper's recipe: concatenate every document into one array with ``<|endoftext|>`` between them and
slice it into 2048-token sequences. ``prepare`` already wrote that array (each document ends in EOS),
so a pretraining *source* is just the flat ``.bin`` of a manifest's train outputs, read zero-copy
through the page cache. A finetuning source is CodeExercises-style prompt/completion JSON lines,
tokenized once into the same shape plus a loss mask (prompt tokens do not count).

Order. Sequence ``j`` of source ``s`` is drawn in a per-epoch permutation seeded by ``(seed, s, epoch)``;
sources are interleaved by a deterministic greedy rule that keeps each source's share of the samples
drawn so far as close as possible to its weight (no randomness, exact proportions at every prefix).
So the whole data order is a function of (data, weights, seed), and the sampler's position is two
small integers per source: that is what a checkpoint stores, and why a resumed run sees exactly the
samples the uninterrupted run would have seen.

Batches. Every rank computes the indices of the *global* batch and takes its own micro-batches from
it (sample ``k`` of a step goes to micro-step ``k // (world x micro)``, rank
``(k // micro) % world``). ZeRO stage, precision and even the number of processes therefore do not
change which sequences make up a step.
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

IGNORE_INDEX = -100  # the label value causal_lm_loss ignores


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


# ------------------------------------------------------------------------------------------- sampler
class BlendedSampler:
    """Deterministic, resumable order over the sequences of several weighted sources (see module doc)."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("one weight per source, at least one source")
        if any(size <= 0 for size, w in zip(sizes, weights) if w > 0):
            raise UsageError(
                "a data source with a non-zero weight has fewer tokens than one sequence",
                "lower data.seq_len or give it weight 0",
            )
        total = float(sum(weights))
        self.sizes = [int(s) for s in sizes]
        self.weights = np.asarray([w / total for w in weights], dtype=np.float64)
        self.seed = int(seed)
        self.consumed = 0
        self.per_source = np.zeros(len(sizes), dtype=np.int64)
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        cached = self._permutations.get(source)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, source, epoch])
            cached = (epoch, rng.permutation(self.sizes[source]))
            self._permutations[source] = cached
        return cached[1]

    def take(self, count: int) -> list[tuple[int, int]]:
        """The next ``count`` samples as ``(source, sequence index)``; advances the position."""
        drawn = []
        for _ in range(count):
            deficit = self.weights * (self.consumed + 1) - self.per_source
            source = int(np.argmax(deficit))
            position = int(self.per_source[source])
            epoch, offset = divmod(position, self.sizes[source])
            drawn.append((source, int(self._permutation(source, epoch)[offset])))
            self.per_source[source] += 1
            self.consumed += 1
        return drawn

    def epochs(self) -> list[float]:
        """How many passes over each source so far (fractional)."""
        return [float(c) / s for c, s in zip(self.per_source, self.sizes)]

    def state_dict(self) -> dict:
        return {
            "consumed": self.consumed,
            "per_source": [int(c) for c in self.per_source],
            "sizes": self.sizes,
            "weights": [float(w) for w in self.weights],
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if (
            state["sizes"] != self.sizes
            or state["seed"] != self.seed
            or not np.allclose(state["weights"], self.weights)
        ):
            raise UsageError(
                f"the checkpoint's data order (sizes {state['sizes']}, seed {state['seed']}) does not match "
                f"this config's data (sizes {self.sizes}, seed {self.seed})",
                "resume with the same data.paths, data.weights, data.seq_len and seed, or start a new run_dir",
            )
        self.consumed = int(state["consumed"])
        self.per_source = np.asarray(state["per_source"], dtype=np.int64)


# ----------------------------------------------------------------------------------------- batching
@dataclass
class MicroBatch:
    input_ids: np.ndarray  # [micro, seq_len] int64
    labels: np.ndarray  # same, IGNORE_INDEX where the token does not count


def build_micro_batch(sources: Sequence[TokenSource], samples: Sequence[tuple[int, int]], seq_len: int) -> MicroBatch:
    inputs, labels = [], []
    for source_index, sequence_index in samples:
        tokens, mask = sources[source_index].sequence(sequence_index, seq_len)
        ids = np.asarray(tokens, dtype=np.int64)
        inputs.append(ids)
        labels.append(ids if mask is None else np.where(np.asarray(mask) > 0, ids, IGNORE_INDEX))
    return MicroBatch(np.stack(inputs), np.stack(labels))


def rank_micro_batches(samples: Sequence, rank: int, world_size: int, micro_size: int) -> list[list]:
    """This rank's micro-batches out of one global batch (layout in the module doc)."""
    per_micro_step = world_size * micro_size
    if len(samples) % per_micro_step:
        raise ValueError("global batch is not a multiple of world_size x micro_size")
    return [
        list(samples[start + rank * micro_size : start + (rank + 1) * micro_size])
        for start in range(0, len(samples), per_micro_step)
    ]


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


class TrainingData:
    """The training stream of one rank: ``next_step()`` yields its micro-batches of the next global batch."""

    def __init__(
        self,
        sources: Sequence[TokenSource],
        weights: Sequence[float] | None,
        seq_len: int,
        seed: int,
        global_size: int,
        micro_size: int,
        rank: int,
        world_size: int,
    ):
        self.sources, self.seq_len = list(sources), seq_len
        sizes = [s.num_sequences(seq_len) for s in self.sources]
        if not weights:  # natural mixture: by size, i.e. what concatenating them would give
            weights = [float(n) for n in sizes]
        self.sampler = BlendedSampler(sizes, weights, seed)
        self.global_size, self.micro_size = global_size, micro_size
        self.rank, self.world_size = rank, world_size

    def next_step(self) -> list[MicroBatch]:
        samples = self.sampler.take(self.global_size)
        return [
            build_micro_batch(self.sources, part, self.seq_len)
            for part in rank_micro_batches(samples, self.rank, self.world_size, self.micro_size)
        ]

    def position(self) -> dict:
        return {
            "consumed_samples": self.sampler.consumed,
            "consumed_tokens": self.sampler.consumed * self.seq_len,
            "epochs": [round(e, 4) for e in self.sampler.epochs()],
        }


class ValidationData:
    """Held-out sequences in file order (no shuffle: the same batches every time, for comparable losses)."""

    def __init__(
        self,
        sources: Sequence[TokenSource],
        seq_len: int,
        max_sequences: int,
        micro_size: int,
        rank: int,
        world_size: int,
    ):
        samples = [(s, i) for s, source in enumerate(sources) for i in range(source.num_sequences(seq_len))]
        per_micro_step = world_size * micro_size
        usable = min(len(samples), max_sequences) // per_micro_step * per_micro_step
        self.sources, self.seq_len = list(sources), seq_len
        self.parts = rank_micro_batches(samples[:usable], rank, world_size, micro_size) if usable else []

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):
        for part in self.parts:
            yield build_micro_batch(self.sources, part, self.seq_len)
