"""Generation: equal to transformers' greedy decoding, cache-independent, batch-independent, exact stops."""

from __future__ import annotations

import pytest
import torch
import transformers
from tokenizers import Tokenizer

from phi_hpc.model.generate import GenerationConfig, _pick, generate_completions, generate_tokens, truncate_at_stop
from phi_hpc.model.hf import load_pretrained, save_pretrained
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM

VOCAB = 512


def randomized(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    # Freshly initialised models have near-uniform logits and greedy decoding collapses into one
    # repeated token, which would make "same tokens" a weak claim. Larger random weights give
    # varied continuations.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.PhiConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=128,
        partial_rotary_factor=0.5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
    )
    hf_model = randomized(transformers.PhiForCausalLM(config), 0.3)
    folder = tmp_path_factory.mktemp("tiny-phi")
    hf_model.save_pretrained(folder)
    return hf_model, load_pretrained(folder)


def random_prompts(lengths, seed=0, vocab=VOCAB):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=gen).tolist() for n in lengths]


def hf_greedy(hf_model, prompts, max_new_tokens):
    longest = max(map(len, prompts))
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    out = hf_model.generate(
        ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    return [out[row, longest:].tolist() for row in range(len(prompts))]


def test_greedy_equals_transformers_generate_on_a_left_padded_batch(hf_and_ours):
    hf_model, ours = hf_and_ours
    prompts = random_prompts([5, 17, 3, 11])
    expected = hf_greedy(hf_model, prompts, 24)
    got = generate_tokens(ours, prompts, GenerationConfig(max_new_tokens=24, batch_size=4))
    assert [samples[0] for samples in got] == expected
    assert all(len(set(tokens)) > 3 for tokens in expected), "the reference must not be a degenerate repeat"


def test_with_and_without_cache_and_batched_and_alone_are_equal(hf_and_ours):
    _, ours = hf_and_ours
    prompts = random_prompts([9, 2, 14, 6, 6], seed=1)
    base = GenerationConfig(max_new_tokens=16, batch_size=5)
    batched = generate_tokens(ours, prompts, base)
    assert generate_tokens(ours, prompts, base.replace(use_cache=False)) == batched
    assert generate_tokens(ours, prompts, base.replace(batch_size=1)) == batched
    assert generate_tokens(ours, prompts, base.replace(batch_size=2)) == batched


def test_sampling_is_seeded_and_independent_of_batching(hf_and_ours):
    _, ours = hf_and_ours
    prompts = random_prompts([4, 8, 6], seed=2)
    config = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.8, top_p=0.95, n=3, seed=7, batch_size=9)
    first = generate_tokens(ours, prompts, config)
    assert generate_tokens(ours, prompts, config.replace(batch_size=2)) == first
    assert generate_tokens(ours, prompts, config.replace(use_cache=False)) == first
    assert generate_tokens(ours, prompts, config.replace(seed=8)) != first
    assert all(len(samples) == 3 for samples in first)
    assert first[0][0] != first[0][1]  # n samples of one prompt are different draws
    # top_p so small that only the argmax survives is greedy decoding.
    nucleus_of_one = generate_tokens(ours, prompts, config.replace(top_p=1e-9, n=1))
    assert nucleus_of_one == generate_tokens(ours, prompts, GenerationConfig(max_new_tokens=12))


def test_sampler_draws_from_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    config = GenerationConfig(do_sample=True, temperature=1.0)
    counts = torch.zeros(5)
    for seed in range(4000):
        counts[_pick(logits, config, [torch.Generator().manual_seed(seed)])] += 1
    expected = torch.softmax(logits[0], dim=-1)
    assert torch.allclose(counts / counts.sum(), expected, atol=0.03)
    assert counts[4] == 0
    # top_p=0.7 keeps the two most likely tokens (0.64 + 0.24 crosses 0.7) and renormalizes.
    counts = torch.zeros(5)
    for seed in range(4000):
        counts[_pick(logits, config.replace(top_p=0.7), [torch.Generator().manual_seed(seed)])] += 1
    assert counts[2:].sum() == 0
    assert abs(counts[0] / counts.sum() - expected[0] / expected[:2].sum()) < 0.03


def test_stop_sequences_truncate_exactly_and_finished_rows_leave_the_batch(codegen_tokenizer, tmp_path):
    tokenizer = Tokenizer.from_file(str(codegen_tokenizer))
    torch.manual_seed(0)
    model = randomized(
        PhiForCausalLM(
            PhiConfig(
                vocab_size=51200,
                hidden_size=64,
                num_layers=2,
                num_heads=4,
                intermediate_size=128,
                rotary_dim=8,
                attn_dropout=0.0,
                resid_dropout=0.0,
            )
        ),
        0.2,
    )
    prompts = ["def add(a, b):\n", "import os\n\nclass Foo:\n    def"]
    free = generate_completions(model, tokenizer, prompts, GenerationConfig(max_new_tokens=30))
    text = free[0][0]
    assert len(text) > 20
    stop = text[10:14]  # a stop sequence that greedy decoding is known to produce
    batch_sizes = []
    model.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    stopped = generate_completions(
        model, tokenizer, prompts, GenerationConfig(max_new_tokens=30, stop_sequences=[stop, "\nNEVER"])
    )
    assert stopped[0][0] == text[: text.index(stop)] == truncate_at_stop(text, [stop])
    assert stopped[1][0] == truncate_at_stop(free[1][0], [stop])
    # Row 0 stopped early (row 1 never meets the stop): the remaining steps ran with one row only.
    assert stop not in free[1][0]
    assert batch_sizes[0] == 2 and batch_sizes[-1] == 1
    assert len(batch_sizes) == 30  # prefill + 29 decoding steps for the row that ran to the limit


def test_exported_model_generates_like_the_original(tmp_path):
    torch.manual_seed(1)
    model = randomized(
        PhiForCausalLM(
            PhiConfig(
                vocab_size=VOCAB,
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                rotary_dim=8,
                attn_dropout=0.0,
                resid_dropout=0.0,
            )
        ),
        0.2,
    )
    save_pretrained(model, tmp_path / "m")
    prompts = random_prompts([3, 7], seed=5)
    config = GenerationConfig(max_new_tokens=8, do_sample=True, n=2, seed=3)
    assert generate_tokens(load_pretrained(tmp_path / "m"), prompts, config) == generate_tokens(model, prompts, config)


def test_config_spellings_agree():
    assert GenerationConfig().greedy and not GenerationConfig().do_sample
    assert not GenerationConfig(do_sample=True).greedy
    assert GenerationConfig(greedy=False).do_sample
    assert GenerationConfig(greedy=False, temperature=0.0).greedy
    with pytest.raises(ValueError):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ValueError):
        GenerationConfig(stop_sequences=[""])


def test_sharded_sampling_with_global_keys_equals_one_process(hf_and_ours):
    _, ours = hf_and_ours
    prompts = random_prompts([5, 9, 4, 7, 6], seed=6)
    config = GenerationConfig(max_new_tokens=8, do_sample=True, n=2, seed=11, top_p=0.9)
    whole = generate_tokens(ours, prompts, config)
    world = 2
    merged = [None] * len(prompts)
    for rank in range(world):
        mine = list(range(rank, len(prompts), world))
        shard = generate_tokens(ours, [prompts[i] for i in mine], config, prompt_keys=mine)
        for index, samples in zip(mine, shard):
            merged[index] = samples
    assert merged == whole


def test_progress_counts_every_requested_sample(hf_and_ours):
    _, ours = hf_and_ours
    prompts = random_prompts([3, 5, 4], seed=9)
    for config in (
        GenerationConfig(max_new_tokens=5, n=3, batch_size=2),
        GenerationConfig(max_new_tokens=5, n=3, batch_size=2, do_sample=True),
    ):
        finished = []
        generate_tokens(ours, prompts, config, progress=finished.append)
        assert sum(finished) == len(prompts) * 3
