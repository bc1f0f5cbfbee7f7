"""The model is phi-1: same parameters, same logits as transformers' PhiForCausalLM, same loss."""

from __future__ import annotations

import pytest
import torch
import transformers

from phi_hpc.config import CONFIG_DIR, load_config
from phi_hpc.model.flops import parameter_count, training_flops_per_token
from phi_hpc.model.hf import load_pretrained, save_pretrained
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM, causal_lm_loss


def hf_tiny_config(**changes) -> transformers.PhiConfig:
    fields = dict(
        vocab_size=512,
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
    fields.update(changes)
    return transformers.PhiConfig(**fields)


def random_hf_model(seed: int = 0, **changes) -> transformers.PhiForCausalLM:
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
    config = PhiConfig(
        vocab_size=300,
        hidden_size=96,
        num_layers=2,
        num_heads=6,
        intermediate_size=384,
        rotary_dim=8,
        max_position_embeddings=64,
        attn_dropout=0.0,
        resid_dropout=0.0,
    )
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


# --------------------------------------------------------------------------------------------------
# Our own paths: cache, padding, precisions, checkpointing, dropout, errors
# --------------------------------------------------------------------------------------------------

SMALL = PhiConfig(
    vocab_size=256,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=128,
    rotary_dim=8,
    max_position_embeddings=128,
    attn_dropout=0.0,
    resid_dropout=0.0,
)


def small_model(seed: int = 0, **changes) -> PhiForCausalLM:
    torch.manual_seed(seed)
    model = PhiForCausalLM(SMALL.replace(**changes))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def test_incremental_decoding_with_the_cache_equals_one_full_forward():
    model = small_model()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model(ids[:, :10], use_cache=True)  # cache starts small and has to grow
        pieces = [logits]
        for t in range(10, 24, 2):  # two tokens at a time: exercises the causal mask inside the cache
            logits, cache = model(ids[:, t : t + 2], past_key_values=cache, use_cache=True)
            pieces.append(logits)
    assert cache.length == 24
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5


def test_left_padding_with_mask_and_positions_gives_the_unpadded_logits():
    model = small_model()
    ids = torch.randint(1, 256, (1, 9), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(ids)
        in_batch = model(padded, position_ids=positions, attention_mask=mask)
    assert not torch.isnan(in_batch).any()
    assert (in_batch[:, 4:] - alone).abs().max().item() <= 1e-5


def test_eager_and_sdpa_agree_and_half_precisions_run(caplog):
    import logging

    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.INFO, logger="phi_hpc.model"), torch.no_grad():
        sdpa = small_model(attention="sdpa")(ids)
        eager = small_model(attention="eager")(ids)
        bf16 = small_model(attention="auto").to(torch.bfloat16)(ids)
        fp16 = small_model(attention="auto").to(torch.float16)(ids)
    assert (sdpa - eager).abs().max().item() <= 1e-5
    assert bf16.dtype == torch.bfloat16 and fp16.dtype == torch.float16
    assert (bf16.float() - sdpa).abs().max().item() < 0.1
    assert (fp16.float() - sdpa).abs().max().item() < 0.02
    assert "attention: sdpa on cpu float32" in caplog.text  # the chosen path is logged
    assert "attention: sdpa on cpu bfloat16" in caplog.text
    assert "attention: eager on cpu float32" in caplog.text


def test_activation_checkpointing_changes_memory_not_results():
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    grads = []
    for checkpointing in (False, True):
        model = small_model(activation_checkpointing=checkpointing).train()
        loss = causal_lm_loss(model(ids), ids)
        loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_dropout_is_active_in_training_only(attention):
    model = small_model(attn_dropout=0.1, resid_dropout=0.1, embd_dropout=0.1, attention=attention)
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
        model.train()
        assert not torch.equal(model(ids), model(ids))


def test_loss_ignores_masked_labels_and_is_zero_when_everything_is_masked():
    logits = torch.randn(2, 6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, 1:4] = -100
    kept = [(b, t) for b in range(2) for t in range(1, 6) if labels[b, t] != -100]
    manual = torch.stack([torch.nn.functional.cross_entropy(logits[b, t - 1], labels[b, t]) for b, t in kept]).mean()
    assert causal_lm_loss(logits, labels).item() == pytest.approx(manual.item(), abs=1e-6)
    assert causal_lm_loss(logits, labels, reduction="sum").item() == pytest.approx(manual.item() * len(kept), abs=1e-5)
    nothing = causal_lm_loss(logits, torch.full_like(labels, -100))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_bad_model_configs_fail_with_the_file_and_the_key(tmp_path):
    from phi_hpc.errors import UsageError

    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 100\nnum_heads: 3\n")
    with pytest.raises(UsageError, match=r"bad.yaml.*not divisible by num_heads 3"):
        load_config(PhiConfig, bad)
    bad.write_text("attention: fast\n")
    with pytest.raises(UsageError, match=r"attention must be one of"):
        load_config(PhiConfig, bad)
    from phi_hpc.model.phi import flash_attn_available

    if not flash_attn_available():  # on a GPU machine with flash-attn this path is legitimately fine
        with pytest.raises(UsageError, match="flash-attn is not installed"):
            PhiForCausalLM(SMALL.replace(attention="flash"))


# microsoft/phi-1's config.json as published (transformers 4.37 layout: rotary settings at the top
# level, rope_scaling null, num_key_value_heads null).
MICROSOFT_PHI1_CONFIG = {
    "_name_or_path": "microsoft/phi-1",
    "architectures": ["PhiForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": None,
    "embd_pdrop": 0.0,
    "eos_token_id": None,
    "hidden_act": "gelu_new",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "phi",
    "num_attention_heads": 32,
    "num_hidden_layers": 24,
    "num_key_value_heads": None,
    "partial_rotary_factor": 0.5,
    "qk_layernorm": False,
    "resid_pdrop": 0.0,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.37.0",
    "use_cache": True,
    "vocab_size": 51200,
}


def test_microsoft_phi1_config_maps_to_the_phi1_architecture(tmp_path):
    import json

    from phi_hpc.model.hf import config_from_hf

    config = config_from_hf(MICROSOFT_PHI1_CONFIG)
    assert config == PhiConfig(attn_dropout=0.0, resid_dropout=0.0)  # same shape; released without dropout
    # A small model in that 4.x layout loads in ours and in transformers identically.
    small = dict(
        MICROSOFT_PHI1_CONFIG,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=300,
    )
    (tmp_path / "config.json").write_text(json.dumps(small))
    torch.manual_seed(0)
    theirs = transformers.PhiForCausalLM(transformers.PhiConfig.from_pretrained(tmp_path)).eval()
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "model.safetensors"))
    ours = load_pretrained(tmp_path)
    assert ours.config.rotary_dim == 8
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-5


def test_unsupported_checkpoints_are_refused_with_a_reason(tmp_path):
    import json

    from phi_hpc.errors import UsageError
    from phi_hpc.model.hf import config_from_hf, state_dict_from_hf

    with pytest.raises(UsageError, match="num_key_value_heads"):
        config_from_hf(dict(MICROSOFT_PHI1_CONFIG, num_key_value_heads=8))
    with pytest.raises(UsageError, match="qk_layernorm"):
        config_from_hf(dict(MICROSOFT_PHI1_CONFIG, qk_layernorm=True))
    with pytest.raises(UsageError, match="trust_remote_code"):
        state_dict_from_hf({"transformer.h.0.mixer.Wqkv.weight": torch.zeros(1)})
    (tmp_path / "config.json").write_text(json.dumps(MICROSOFT_PHI1_CONFIG)[:-5])
    from phi_hpc.errors import PhiError

    with pytest.raises(PhiError, match=r"config.json:1: invalid JSON"):
        load_pretrained(tmp_path)


def test_flops_arithmetic_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, phi_hpc.model.flops as f, phi_hpc.model.commands; "
        "assert f.peak_flops_for_device('NVIDIA A100-SXM4-80GB') == 312e12; "
        "assert f.peak_flops_for_device('NVIDIA H100 PCIe') == 756e12; "
        "assert f.peak_flops_for_device('Tesla V100') is None; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    from tests.conftest import REPO_ROOT

    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
