"""The model is phi-1: same parameters, same logits as transformers' PhiForCausalLM, same loss."""

from __future__ import annotations

import pytest
import torch

from phi_hpc.config import CONFIG_DIR, load_config
from phi_hpc.model.flops import parameter_count, training_flops_per_token
from phi_hpc.model.hf import load_pretrained, save_pretrained
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM, causal_lm_loss

import transformers


def hf_tiny_config(**changes) -> "transformers.PhiConfig":
    fields = dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=4, max_position_embeddings=128, partial_rotary_factor=0.5,
                  resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)
    fields.update(changes)
    return transformers.PhiConfig(**fields)


def random_hf_model(seed: int = 0, **changes) -> "transformers.PhiForCausalLM":
    torch.manual_seed(seed)
    model = transformers.PhiForCausalLM(hf_tiny_config(**changes)).eval()
    # transformers zero-inits biases and sets LayerNorms to 1: randomize everything so every
    # parameter's role (and any mix-up between q, k and v) shows in the logits.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


@pytest.mark.parametrize("name", ["phi-1", "phi-1-small", "tiny"])
def test_model_configs_load_and_count_parameters_without_allocating(name):
    config = load_config(PhiConfig, CONFIG_DIR / "model" / f"{name}.yaml")
    with torch.device("meta"):
        model = PhiForCausalLM(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.num_parameters() == parameter_count(config)


def test_phi1_parameter_count_equals_transformers_on_meta_device():
    config = load_config(PhiConfig, CONFIG_DIR / "model" / "phi-1.yaml")
    hf_config = transformers.PhiConfig()  # transformers' defaults are microsoft/phi-1's shape
    with torch.device("meta"):
        ours = PhiForCausalLM(config)
        theirs = transformers.PhiForCausalLM(hf_config)
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert ours.num_parameters() == n_theirs == parameter_count(config) == 1_418_270_720
    # The same names and shapes once q/k/v are split: nothing is merely the same total by accident.
    from phi_hpc.model.hf import state_dict_to_hf

    ours_shapes = {k: tuple(v.shape) for k, v in state_dict_to_hf(ours.state_dict()).items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes


def test_phi1_flops_per_token_follow_the_stated_convention():
    config = PhiConfig()
    non_embedding = 1_418_270_720 - 51200 * 2048
    assert training_flops_per_token(config, 2048) == 6 * non_embedding + 12 * 24 * 2048 * 2048


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_imported_transformers_model_gives_the_same_logits(tmp_path, attention):
    hf_model = random_hf_model()
    hf_model.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf", attention=attention)
    ids = torch.randint(0, 512, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (3, 40, 512)
    assert (got - expected).abs().max().item() <= 1e-5


def test_exported_model_reloads_in_transformers_with_the_same_logits(tmp_path):
    torch.manual_seed(3)
    config = PhiConfig(vocab_size=300, hidden_size=96, num_layers=2, num_heads=6, intermediate_size=384,
                       rotary_dim=8, max_position_embeddings=64, attn_dropout=0.0, resid_dropout=0.0)
    ours = PhiForCausalLM(config).eval()
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_pretrained(ours, tmp_path / "export")
    theirs = transformers.PhiForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert theirs.model.layers[0].self_attn.rotary_ndims == 8
    ids = torch.randint(0, 300, (2, 33), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        expected = theirs(ids, labels=labels)
        got = ours(ids)
    assert (got - expected.logits).abs().max().item() <= 1e-5
    # Our loss uses transformers' shift convention exactly.
    assert abs(causal_lm_loss(got, labels).item() - expected.loss.item()) <= 1e-5
    # And back: our own reload is bit-identical.
    again = load_pretrained(tmp_path / "export")
    with torch.no_grad():
        assert torch.equal(again(ids), got)
