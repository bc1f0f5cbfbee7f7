"""Data order and batching: deterministic, blended by weight, resumable, world-size independent."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from phi_hpc.data.indexed import IndexedDatasetWriter
from phi_hpc.errors import UsageError
from phi_hpc.train.data import (
    IGNORE_INDEX,
    BlendedSampler,
    TrainingData,
    ValidationData,
    build_micro_batch,
    rank_micro_batches,
)
from phi_hpc.train.sources import FlatTokens, TokenSource, encode_prompt_completion, indexed_source, jsonl_source


def test_flat_tokens_slices_across_arrays_without_gaps():
    arrays = [np.arange(0, 5), np.arange(5, 7), np.arange(7, 20)]
    flat = FlatTokens(arrays)
    assert len(flat) == 20
    for start in range(20):
        for stop in range(start + 1, 21):
            assert flat.slice(start, stop).tolist() == list(range(start, stop))


def test_sampler_is_a_function_of_the_seed():
    first = BlendedSampler([100, 40], [0.5, 0.5], seed=7).take(300)
    again = BlendedSampler([100, 40], [0.5, 0.5], seed=7).take(300)
    other = BlendedSampler([100, 40], [0.5, 0.5], seed=8).take(300)
    assert first == again
    assert first != other


def test_sampler_blends_by_weight_at_every_prefix():
    sampler = BlendedSampler([1000, 1000, 1000], [0.6, 0.3, 0.1], seed=0)
    drawn = sampler.take(1000)
    counts = Counter(source for source, _ in drawn)
    assert counts == {0: 600, 1: 300, 2: 100}
    for prefix in (10, 57, 333):  # greedy interleaving: never more than one sample off its share
        part = Counter(s for s, _ in drawn[:prefix])
        for source, weight in enumerate([0.6, 0.3, 0.1]):
            assert abs(part[source] - weight * prefix) <= 1


def test_each_epoch_is_a_fresh_permutation_of_every_sequence():
    sampler = BlendedSampler([50], [1.0], seed=3)
    epoch0 = [i for _, i in sampler.take(50)]
    epoch1 = [i for _, i in sampler.take(50)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert epoch0 != epoch1
    assert sampler.epochs() == [2.0]


def test_sampler_state_resumes_the_same_order():
    uninterrupted = BlendedSampler([30, 70], [0.25, 0.75], seed=11).take(250)
    first = BlendedSampler([30, 70], [0.25, 0.75], seed=11)
    head = first.take(123)
    state = json.loads(json.dumps(first.state_dict()))  # it travels as JSON in the checkpoint
    resumed = BlendedSampler([30, 70], [0.25, 0.75], seed=11)
    resumed.load_state_dict(state)
    assert head + resumed.take(127) == uninterrupted


def test_sampler_refuses_a_state_from_other_data():
    state = BlendedSampler([30, 70], [0.5, 0.5], seed=1).state_dict()
    with pytest.raises(UsageError, match="does not match"):
        BlendedSampler([31, 70], [0.5, 0.5], seed=1).load_state_dict(state)


def test_rank_micro_batches_partition_the_global_batch():
    samples = list(range(24))
    parts = {rank: rank_micro_batches(samples, rank, world_size=3, micro_size=2) for rank in range(3)}
    assert all(len(p) == 4 for p in parts.values())  # accumulation 24 / (3 x 2)
    flattened = sorted(s for p in parts.values() for micro in p for s in micro)
    assert flattened == samples
    assert parts[1][0] == [2, 3] and parts[0][1] == [6, 7]


def _source(n_tokens: int, name: str = "s") -> TokenSource:
    return TokenSource(name, FlatTokens([np.arange(n_tokens, dtype=np.uint16)]))


def test_a_step_holds_the_same_sequences_whatever_the_world_size():
    sources = [_source(64 * 40, "a"), _source(64 * 25, "b")]

    def step_contents(world_size: int, micro: int) -> list[list[int]]:
        ranks = [
            TrainingData(sources, [2, 1], 64, seed=5, global_size=8, micro_size=micro, rank=r, world_size=world_size)
            for r in range(world_size)
        ]
        steps = []
        for _ in range(3):
            rows = [tuple(row) for data in ranks for mb in data.next_step() for row in mb.input_ids.tolist()]
            steps.append(sorted(rows))
        return steps

    assert step_contents(1, 8) == step_contents(2, 2) == step_contents(4, 1)


def test_micro_batch_labels_follow_the_loss_mask():
    tokens = FlatTokens([np.arange(10, 18, dtype=np.uint16)])
    mask = FlatTokens([np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=np.uint8)])
    batch = build_micro_batch([TokenSource("ft", tokens, mask)], [(0, 0), (0, 1)], seq_len=4)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert batch.labels.tolist() == [[IGNORE_INDEX] * 3 + [13], [14, 15, 16, 17]]


def test_encode_prompt_completion_masks_only_the_prompt():
    tokens, mask = encode_prompt_completion([1, 2, 3], [4, 5], eos_id=0, mask_prompt=True)
    assert tokens.tolist() == [1, 2, 3, 4, 5, 0] and mask.tolist() == [0, 0, 0, 1, 1, 1]
    _, unmasked = encode_prompt_completion([1, 2, 3], [4, 5], eos_id=0, mask_prompt=False)
    assert unmasked.tolist() == [1] * 6


def _write_prefix(prefix, docs):
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        for doc in docs:
            writer.add_document(doc)


def test_indexed_source_reads_the_manifest_splits(tmp_path):
    _write_prefix(tmp_path / "train-0", [[1, 2, 0], [3, 0]])
    _write_prefix(tmp_path / "train-1", [[4, 5, 6, 0]])
    _write_prefix(tmp_path / "valid", [[7, 0]])
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "outputs": [
                    {"split": "train", "prefix": "train-0"},
                    {"split": "train", "prefix": "train-1"},
                    {"split": "validation", "prefix": "valid"},
                ]
            }
        )
    )
    train = indexed_source(tmp_path, "train")
    assert train.tokens.slice(0, len(train.tokens)).tolist() == [1, 2, 0, 3, 0, 4, 5, 6, 0]
    assert train.num_sequences(4) == 2 and train.sequence(1, 4)[0].tolist() == [0, 4, 5, 6]
    assert indexed_source(tmp_path / "manifest.json", "validation").tokens.slice(0, 2).tolist() == [7, 0]
    assert indexed_source(tmp_path / "train-1", "train").num_sequences(4) == 1  # a bare prefix
    with pytest.raises(UsageError, match="nothing-here does not exist"):
        indexed_source(tmp_path / "nothing-here", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty has no manifest.json"):
        indexed_source(tmp_path / "empty", "train")


def test_validation_data_is_in_order_and_split_over_ranks():
    sources = [_source(4 * 10)]
    ranks = [ValidationData(sources, 4, max_sequences=8, micro_size=2, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    rows = sorted(row[0] for v in ranks for mb in v for row in mb.input_ids.tolist())
    assert rows == [0, 4, 8, 12, 16, 20, 24, 28]


def test_jsonl_source_tokenizes_once_and_masks_prompts(tmp_path, codegen_tokenizer):
    from tokenizers import Tokenizer

    path = tmp_path / "ex.jsonl"
    examples = [{"q": "def add(a, b):\n", "a": "    return a + b\n"}, {"q": "# square\n", "a": "x = y * y\n"}]
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    source = jsonl_source(path, str(codegen_tokenizer), tmp_path / "cache", "q", "a", mask_prompt=True)
    tok = Tokenizer.from_file(str(codegen_tokenizer))
    eos = tok.token_to_id("<|endoftext|>")
    expected, expected_mask = [], []
    for e in examples:
        p, c = tok.encode(e["q"]).ids, tok.encode(e["a"]).ids
        expected += p + c + [eos]
        expected_mask += [0] * len(p) + [1] * (len(c) + 1)
    n = len(source.tokens)
    assert source.tokens.slice(0, n).tolist() == expected
    assert source.loss_mask.slice(0, n).tolist() == expected_mask
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # cached: built once, memory-mapped after


def test_jsonl_errors_name_the_file_and_line(tmp_path, codegen_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: no string field 'completion'"):
        jsonl_source(path, str(codegen_tokenizer), tmp_path / "cache")
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: invalid JSON"):
        jsonl_source(path, str(codegen_tokenizer), tmp_path / "cache")
    path.write_text("\n")
    with pytest.raises(UsageError, match=r"bad.jsonl: no examples"):
        jsonl_source(path, str(codegen_tokenizer), tmp_path / "cache")
