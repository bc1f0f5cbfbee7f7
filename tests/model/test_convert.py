"""``phi-hpc convert`` both ways, through the real CLI, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from phi_hpc.model.hf import load_pretrained, save_pretrained
from phi_hpc.model.phi import PhiConfig, PhiForCausalLM
from phi_hpc.run_layout import model_checkpoint


def tiny_ours(seed: int = 0) -> PhiForCausalLM:
    torch.manual_seed(seed)
    model = PhiForCausalLM(
        PhiConfig(
            vocab_size=256,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            rotary_dim=8,
            max_position_embeddings=64,
            attn_dropout=0.0,
            resid_dropout=0.0,
        )
    )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.mark.slow
def test_from_hf_imports_a_transformers_folder(tmp_path, run_cli):
    torch.manual_seed(0)
    hf_model = transformers.PhiForCausalLM(
        transformers.PhiConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    ).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    run_cli("convert", "--from-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "ckpt"), check=True)
    summary = json.loads((tmp_path / "ckpt" / "conversion.json").read_text())
    assert summary["direction"] == "from-hf" and summary["verified_max_abs_logit_diff"] == 0.0
    assert summary["parameters"] == sum(p.numel() for p in hf_model.parameters())
    ours = load_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids) - hf_model(ids).logits).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_to_hf_follows_a_runs_latest_checkpoint_and_casts(tmp_path, run_cli, codegen_tokenizer):
    # A run folder as the trainer lays it out: checkpoints/<step>/ holds the HF files, latest names it.
    old, new = tiny_ours(seed=1), tiny_ours(seed=2)
    save_pretrained(old, tmp_path / "run" / "checkpoints" / "10")
    save_pretrained(new, tmp_path / "run" / "checkpoints" / "20")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("20\n")
    assert model_checkpoint(tmp_path / "run").folder == tmp_path / "run" / "checkpoints" / "20"
    assert (
        model_checkpoint(tmp_path / "run" / "checkpoints" / "latest").folder == tmp_path / "run" / "checkpoints" / "20"
    )

    run_cli(
        "convert",
        "--to-hf",
        str(tmp_path / "run"),
        "-o",
        str(tmp_path / "out"),
        "--dtype",
        "bf16",
        "--tokenizer",
        str(codegen_tokenizer),
        check=True,
    )
    theirs = transformers.PhiForCausalLM.from_pretrained(tmp_path / "out")
    assert theirs.dtype == torch.bfloat16
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = new.to(torch.bfloat16)(ids).float()
        got = theirs.eval()(ids).logits.float()
    assert (got - expected).abs().max().item() <= 0.05  # bf16 rounding; the old step would be far off
    with torch.no_grad():
        assert (old.to(torch.bfloat16)(ids).float() - got).abs().max().item() > 0.1


@pytest.mark.slow
def test_convert_errors_are_one_line_and_leave_nothing_behind(tmp_path, run_cli):
    neither = run_cli("convert", "-o", str(tmp_path / "x"))
    assert neither.returncode == 2 and "exactly one of" in neither.stderr
    missing = run_cli("convert", "--to-hf", str(tmp_path / "nope"), "-o", str(tmp_path / "x"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr

    not_phi = tmp_path / "llama"
    not_phi.mkdir()
    (not_phi / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": 2}))
    wrong = run_cli("convert", "--from-hf", str(not_phi), "-o", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "model_type is 'llama'" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1

    save_pretrained(tiny_ours(), tmp_path / "ckpt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    busy = run_cli("convert", "--to-hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "full"))
    assert busy.returncode == 2 and "--force" in busy.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    broken = run_cli("convert", "--to-hf", str(tmp_path / "broken"), "-o", str(tmp_path / "y"))
    assert broken.returncode == 1 and "incomplete" in broken.stderr
    assert not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".y.")]
