"""Acceptance 5: finetuning from a pretrain checkpoint with the prompt masked out of the loss.

Checked twice: directly on the loss and its gradient, and end to end: the loss the trainer logged at
its first finetuning step is recomputed here from the pretrain checkpoint's weights and the loader's
labels, and it equals the completion-only loss, not the all-token loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from phi_hpc.model.phi import causal_lm_loss
from phi_hpc.train.data import IGNORE_INDEX, build_micro_batch
from phi_hpc.train.sources import FlatTokens, TokenSource
from tests.train.conftest import TINY_FINETUNE, assert_ok, run_training, step_lines


def test_masked_labels_contribute_no_loss_and_no_gradient():
    torch.manual_seed(0)
    tokens = np.array([5, 6, 7, 8, 9, 10, 11, 12], dtype=np.uint16)
    mask = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=np.uint8)  # prompt, completion, next prompt, ...
    batch = build_micro_batch([TokenSource("ft", FlatTokens([tokens]), FlatTokens([mask]))], [(0, 0)], seq_len=8)
    labels = torch.from_numpy(batch.labels)
    assert labels.tolist() == [[IGNORE_INDEX] * 3 + [8, 9, 10, IGNORE_INDEX, 12]]

    logits = torch.randn(1, 8, 32, requires_grad=True)
    loss = causal_lm_loss(logits, labels)
    counted = [t for t in range(1, 8) if mask[t]]  # logits[t-1] predicts token t
    log_probs = torch.log_softmax(logits[0].detach(), dim=-1)
    expected = -torch.stack([log_probs[t - 1, tokens[t]] for t in counted]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    loss.backward()
    for position in range(8):
        predicts_counted = position + 1 in counted
        assert bool(logits.grad[0, position].abs().sum() > 0) == predicts_counted, position

    # whatever the model predicts where the target is a prompt token, the loss is the same
    with torch.no_grad():
        scrambled = logits.detach().clone()
        for position in range(7):
            if position + 1 not in counted:
                scrambled[0, position] = torch.randn(32) * 10
    assert causal_lm_loss(scrambled, labels).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.deepspeed
@pytest.mark.slow
def test_finetune_from_pretrain_checkpoint_counts_only_completions(
    baseline_run, runs_root, mbpp_path, codegen_tokenizer
):
    from phi_hpc.model.hf import load_pretrained
    from phi_hpc.train.config import load_train_config
    from phi_hpc.train.data import TrainingData
    from phi_hpc.train.sources import jsonl_source

    exercises = runs_root / "exercises.jsonl"  # MBPP problems as prompt/completion pairs
    exercises.write_text("".join(line for line in mbpp_path.read_text().splitlines(keepends=True)[:80]))
    run_dir = runs_root / "finetune"
    overrides = [
        f"data.paths=[{exercises}]",
        f"data.tokenizer={codegen_tokenizer}",
        "data.prompt_field=text",
        "data.completion_field=code",
        f"checkpoint.init_from={baseline_run}",
        "steps=3",
        "validation.every=0",
    ]
    assert_ok(run_training(run_dir, exercises, *overrides, nproc=1, config=TINY_FINETUNE))
    logged = step_lines(run_dir)
    assert [r["step"] for r in logged] == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["launcher"] == "single"
    assert (run_dir / "checkpoints" / "3" / "model.safetensors").is_file()

    # recompute step 1 from the pretrain weights (init_from = the run's latest = step 12) and the same data
    config = load_train_config(run_dir / "config.yaml")
    assert config.data.mask_prompt and config.data.seq_len == 32
    source = jsonl_source(exercises, config.data.tokenizer, run_dir / "data-cache", "text", "code", True, build=False)
    data = TrainingData(
        [source],
        None,
        config.data.seq_len,
        config.seed,
        config.batch.global_size,
        config.batch.micro_size,
        rank=0,
        world_size=1,
    )
    model = load_pretrained(baseline_run / "checkpoints" / "12").eval()
    completion_only, every_token, masked_targets = [], [], 0
    with torch.no_grad():
        for micro in data.next_step():
            ids, labels = torch.from_numpy(micro.input_ids), torch.from_numpy(micro.labels)
            logits = model(ids)
            completion_only.append(causal_lm_loss(logits, labels).item())
            every_token.append(causal_lm_loss(logits, ids).item())
            masked_targets += int((labels[:, 1:] == IGNORE_INDEX).sum())
    assert masked_targets > 0  # the first step really contains prompt tokens
    assert logged[0]["loss"] == pytest.approx(float(np.mean(completion_only)), rel=1e-5)
    assert abs(logged[0]["loss"] - float(np.mean(every_token))) > 1e-2
