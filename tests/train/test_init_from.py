"""``checkpoint.init_from``: which folders it accepts, and the error for a checkpoint of another shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from phi_hpc.errors import UsageError
from phi_hpc.model.hf import save_pretrained
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM
from phi_hpc.train.startup import load_initial_weights

TINY = PhiConfig(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    rotary_dim=4,
    max_position_embeddings=64,
    attn_dropout=0.0,
    resid_dropout=0.0,
)


def _quiet(message: str) -> None:
    """``say`` of a rank that is not rank 0: weight loading runs here without a process group."""


def test_init_from_copies_weights_from_a_run_folder_and_ignores_dropout(tmp_path):
    torch.manual_seed(0)
    source = PhiForCausalLM(TINY)
    step_dir = tmp_path / "run" / "checkpoints" / "7"
    save_pretrained(source, step_dir)
    (step_dir / "trainer_state.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("7\n")

    target = PhiForCausalLM(dataclasses.replace(TINY, resid_dropout=0.1, attn_dropout=0.1))  # finetuning dropout
    load_initial_weights(target, str(tmp_path / "run"), _quiet)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_init_from_refuses_another_architecture(tmp_path):
    save_pretrained(PhiForCausalLM(TINY), tmp_path / "model")
    wider = PhiForCausalLM(dataclasses.replace(TINY, hidden_size=64, intermediate_size=128))
    with pytest.raises(UsageError, match="has hidden_size=32, the config says 64"):
        load_initial_weights(wider, str(tmp_path / "model"), _quiet)
    with pytest.raises(UsageError, match="is not a model folder"):
        load_initial_weights(wider, str(tmp_path / "nothing"), _quiet)
