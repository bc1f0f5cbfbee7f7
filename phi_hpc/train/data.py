"""Training data order and batches: a blended, shuffled, resumable order over fixed-length sequences.

The sources (flat token streams of prepare outputs or tokenized finetuning files, each sliced into
``seq_len`` sequences) are opened by :mod:`phi_hpc.train.sources`; this module only decides which of
their sequences make up each step, on each rank.

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phi_hpc.errors import UsageError
from phi_hpc.train.sources import TokenSource

IGNORE_INDEX = -100  # the label value causal_lm_loss ignores


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
