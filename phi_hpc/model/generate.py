"""Batched sampling from a phi model with a KV cache, for HumanEval/MBPP-style evaluation.

What makes evaluation fast and its numbers trustworthy:

* **Batched, left-padded prompts.** Prompts of a batch are padded on the left, with an attention mask
  that hides the padding and position ids that start at 0 at each prompt's first real token, so a
  prompt gets the same logits whether it is alone or in a batch (a test checks it).
* **A KV cache** (:class:`~phi_hpc.model.phi.KVCache`, preallocated): each step feeds one token per
  sequence instead of the whole prefix.
* **Finished rows leave the batch.** Stop sequences (e.g. ``"\\ndef"``) and EOS are checked as tokens
  arrive; a finished sequence is dropped from the batch and its cache rows with it, so a batch costs
  what its still-running sequences cost, not what its longest one does.
* **Sampling independent of batching.** Each (prompt, sample) draws from its own seeded generator,
  so the same seed gives the same samples whatever the batch size, order or number of ranks.

``generate_tokens`` works on token ids (tested against transformers' ``generate``);
``generate_completions`` is the text API used by ``phi-hpc eval run``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from phi_hpc.model.stops import truncate_at_stop  # noqa: F401 (part of this module's API)

StopCheck = Callable[[list[int]], bool]


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample: greedy unless ``greedy=False`` or ``do_sample=True``.

    ``greedy`` and ``do_sample`` are two spellings of one switch (HumanEval reports say "greedy",
    transformers says ``do_sample``); when ``do_sample`` is given it decides, and afterwards both
    fields are consistent. ``temperature=0`` also means greedy, as in most evaluation harnesses.
    """

    max_new_tokens: int = 256
    greedy: bool = True
    do_sample: bool | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop_sequences: list[str] = field(default_factory=list)
    batch_size: int = 32  # decoding is launch-bound: more rows per step cost little extra time
    use_cache: bool = True

    def __post_init__(self) -> None:
        greedy = (not self.do_sample) if self.do_sample is not None else self.greedy
        if self.temperature == 0:
            greedy = True
        object.__setattr__(self, "greedy", greedy)
        object.__setattr__(self, "do_sample", not greedy)
        object.__setattr__(self, "stop_sequences", list(self.stop_sequences))
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.n < 1 or self.batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={self.n}, batch_size={self.batch_size}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not isinstance(stop, str) or not stop for stop in self.stop_sequences):
            raise ValueError("stop sequences must be non-empty strings")

    def replace(self, **changes) -> GenerationConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------
# Token level
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_tokens(
    model,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    eos_token_id: int | None = None,
    stop_check: StopCheck | None = None,
    pad_token_id: int = 0,
    progress: Callable[[int], None] | None = None,
    prompt_keys: Sequence[int] | None = None,
) -> list[list[list[int]]]:
    """``config.n`` continuations (new token ids only) of each prompt, in prompt order.

    A continuation ends at ``eos_token_id`` (not included), when ``stop_check(new_ids)`` says so
    (included: the caller trims text), or after ``max_new_tokens``. ``progress(k)`` is called as
    ``k`` more sequences finish. ``prompt_keys`` (default: the positions in ``prompts``) name each
    prompt for the sampler's seeds: pass global problem indices and a run sharded over ranks samples
    exactly what a single process would.
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    keys = list(range(len(prompts))) if prompt_keys is None else list(prompt_keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} prompt_keys for {len(prompts)} prompts")
    # Greedy samples of one prompt are identical: decode once and copy (and count it n times).
    copies = 1 if config.greedy else config.n
    if progress is not None and copies != config.n:
        report = progress
        progress = lambda finished: report(finished * config.n)  # noqa: E731
    jobs = [(i, s) for i in range(len(prompts)) for s in range(copies)]
    # Longest prompts first: the heaviest batch runs (and fails, if memory is short) first, and
    # similar lengths batch together, which wastes less on padding.
    jobs.sort(key=lambda job: -len(prompts[job[0]]))
    results: dict[tuple[int, int], list[int]] = {}
    for start in range(0, len(jobs), config.batch_size):
        batch_jobs = jobs[start : start + config.batch_size]
        outputs = _generate_batch(
            model,
            [prompts[i] for i, _ in batch_jobs],
            config,
            [_row_seed(config.seed, keys[i], s) for i, s in batch_jobs],
            eos_token_id,
            stop_check,
            pad_token_id,
            progress,
        )
        results.update(zip(batch_jobs, outputs))
    return [[list(results[(i, s if copies > 1 else 0)]) for s in range(config.n)] for i in range(len(prompts))]


def _row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    return (seed * 1_000_003 + prompt_index * 10_007 + sample_index) % (2**63 - 1)


def _generate_batch(model, prompts, config, seeds, eos_token_id, stop_check, pad_token_id, progress):
    """Decode one batch. Per step the host does one thing only: read the new tokens (EOS and stop
    strings are host logic). Everything else stays on the device: the attention mask and positions
    are preallocated and sliced, each row's uniforms for sampling are drawn once up front, and the
    batch is reindexed only on the steps where rows finish."""
    device = model.lm_head.weight.device
    batch = len(prompts)
    longest = max(len(p) for p in prompts)
    total = longest + config.max_new_tokens
    ids, mask, padded = _left_padded(prompts, pad_token_id, total, device)
    positions = (mask[:, :longest].cumsum(dim=1) - 1).clamp(min=0)
    next_position = positions[:, -1:] + 1
    uniforms = None if config.greedy else _row_uniforms(seeds, config.max_new_tokens, device)

    outputs: list[list[int]] = [[] for _ in range(batch)]
    if config.max_new_tokens == 0:
        return outputs
    active = list(range(batch))  # original row of each row still in the batch
    cache = None
    if config.use_cache:
        cache = model.new_cache(batch, total)
        logits, cache = model(
            ids,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            attention_mask=mask[:, :longest] if padded else None,
            last_logits_only=True,
        )
    else:
        logits = model(
            ids, position_ids=positions, attention_mask=mask[:, :longest] if padded else None, last_logits_only=True
        )

    for step in range(config.max_new_tokens):
        next_tokens = _pick(logits[:, -1], config, uniforms=uniforms[:, step] if uniforms is not None else None)
        tokens = next_tokens.tolist()  # the one sync of the step
        keep = []
        for slot, (row, token) in enumerate(zip(active, tokens)):
            if token == eos_token_id:
                continue
            outputs[row].append(token)
            if stop_check is not None and stop_check(outputs[row]):
                continue
            keep.append(slot)
        if progress is not None and len(keep) < len(active):
            progress(len(active) - len(keep))
        if not keep or step == config.max_new_tokens - 1:
            if progress is not None and keep:
                progress(len(keep))
            break
        if len(keep) < len(active):
            index = torch.as_tensor(keep).to(device, non_blocking=True)
            active = [active[slot] for slot in keep]
            next_tokens, mask, next_position = next_tokens[index], mask[index], next_position[index]
            ids = ids[index]
            if uniforms is not None:
                uniforms = uniforms[index]
            if cache is not None:
                cache.keep_rows(index)
            padded = padded and any(len(prompts[row]) < longest for row in active)  # host-side, no sync
        length = longest + step + 1  # tokens so far, the new one included
        if cache is not None:
            logits, cache = model(
                next_tokens[:, None],
                position_ids=next_position,
                past_key_values=cache,
                use_cache=True,
                attention_mask=mask[:, :length] if padded else None,
            )
        else:  # the reference path: recompute everything, no cache
            ids = torch.cat([ids, next_tokens[:, None]], dim=1)
            positions = (mask[:, :length].cumsum(dim=1) - 1).clamp(min=0)
            logits = model(
                ids, position_ids=positions, attention_mask=mask[:, :length] if padded else None, last_logits_only=True
            )
        next_position = next_position + 1
    return outputs


def _left_padded(prompts, pad_token_id: int, total: int, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The batch's prompt ids, padded on the left to the longest, and its attention mask for all ``total``
    positions (generated tokens are always real), both on ``device``; and whether any row is padded.

    Left padding puts every row's last prompt token in the same column, so one step appends to all rows.
    ``padded`` is decided here on the host, before anything is on the device: unpadded batches then
    skip the mask altogether (no device sync to find out later)."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_token_id, dtype=torch.long)
    mask = torch.ones((len(prompts), total), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, : longest - len(prompt)] = 0
    padded = bool((mask == 0).any())
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True), padded


def _row_uniforms(seeds: list[int], max_new_tokens: int, device) -> torch.Tensor:
    """Each row's uniforms for sampling, one per step, from the row's own seed: drawn once per batch
    (not one draw per row per step), so a row's sample does not depend on its batch or its slot in it."""
    return torch.stack(
        [torch.rand(max(max_new_tokens, 1), generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    ).to(device)


def _pick(
    logits: torch.Tensor, config: GenerationConfig, generators=None, uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """Next token per row: argmax, or a temperature/top-p sample from the row's own uniform draw.

    ``uniforms`` (one per row, on the device) come from each row's seeded generator, drawn once per
    batch; ``generators`` draws them here instead (one per row), for callers with a single step.
    """
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    order = None
    if config.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (the one crossing it
        # included). Only nucleus sampling needs the sort; plain sampling works in vocabulary order.
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= config.top_p, 0.0)
    cumulative = probs.cumsum(dim=-1)
    # Inverse-CDF sampling with one uniform per row from that row's generator: batch-independent.
    # right=True: a zero-probability token (a flat step of the CDF) can never be hit.
    if uniforms is None:
        uniforms = torch.stack([torch.rand((), generator=g) for g in generators]).to(logits.device)
    targets = uniforms.to(cumulative.dtype) * cumulative[:, -1]
    picked = torch.searchsorted(cumulative, targets[:, None], right=True).clamp(max=logits.shape[-1] - 1)
    return (order.gather(-1, picked) if order is not None else picked).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# Text level
# --------------------------------------------------------------------------------------------------


def make_stop_check(tokenizer, stop_sequences: Sequence[str]) -> StopCheck | None:
    """A check that decodes only the tail of a sequence, long enough to hold any stop sequence.

    Every byte-level BPE token is at least one byte, so a stop sequence of b bytes that ends in the
    newest token lies within the last b + 1 tokens: the check costs O(b), not O(length), per token.
    """
    if not stop_sequences:
        return None
    window = max(len(stop.encode("utf-8")) for stop in stop_sequences) + 1

    def check(new_ids: list[int]) -> bool:
        tail = tokenizer.decode(new_ids[-window:], skip_special_tokens=False)
        return any(stop in tail for stop in stop_sequences)

    return check


def eos_id_of(tokenizer) -> int | None:
    return tokenizer.token_to_id("<|endoftext|>")


def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    progress: Callable[[int], None] | None = None,
    prompt_keys: Sequence[int] | None = None,
) -> list[list[str]]:
    """``config.n`` completions per prompt (text after the prompt), each cut at its first stop sequence.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (phi-1's is codegen-350M-mono's). Generation ends at
    ``<|endoftext|>`` too. ``prompt_keys``: see :func:`generate_tokens` (for data-parallel runs).
    """
    encoded = [tokenizer.encode(prompt).ids for prompt in prompts]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens")
    eos = eos_id_of(tokenizer)
    tokens = generate_tokens(
        model,
        encoded,
        config,
        eos_token_id=eos,
        stop_check=make_stop_check(tokenizer, config.stop_sequences),
        pad_token_id=eos if eos is not None else 0,
        progress=progress,
        prompt_keys=prompt_keys,
    )
    return [
        [truncate_at_stop(tokenizer.decode(ids, skip_special_tokens=False), config.stop_sequences) for ids in samples]
        for samples in tokens
    ]
