"""Which model and tokenizer ``eval run`` loads, from what the user typed.

``--checkpoint`` accepts every path a user is likely to have at hand (a step folder, a run's
``checkpoints/`` folder or its ``latest`` pointer, the run folder, the copy ``--eval-every`` keeps);
which step that is, and which run it belongs to, is :func:`phi_hpc.run_layout.model_checkpoint`'s
decision. ``--hf-model`` is any local transformers Phi folder. The tokenizer is found without loading
torch, so a wrong path fails in milliseconds: ``--tokenizer``, else the checkpoint's own
(:meth:`phi_hpc.run_layout.Checkpoint.tokenizer`: beside the model, else the one its run trained with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.eval.config import EvalRunConfig
from phi_hpc.run_layout import MODEL_CONFIG, Checkpoint, RunLayout, model_checkpoint


@dataclass(frozen=True)
class ResolvedModel:
    """The HF-format folder to load, and what we know about where it came from."""

    model_dir: Path
    source: str  # "checkpoint" | "hf-model"
    given: str  # what the user typed
    step: int | None = None  # training step, when the folder is one of our checkpoints
    run_dir: Path | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.model_dir, self.step, RunLayout(self.run_dir) if self.run_dir else None)


def resolve_checkpoint(path: str | Path) -> ResolvedModel:
    """Any way a user names our checkpoint, with its step and run (so results land on a curve)."""
    found = model_checkpoint(path)
    return ResolvedModel(
        model_dir=found.folder,
        source="checkpoint",
        given=str(path),
        step=found.step,
        run_dir=found.run.root if found.run else None,
    )


def resolve_model(config: EvalRunConfig) -> ResolvedModel:
    if config.checkpoint:
        return resolve_checkpoint(config.checkpoint)
    model_dir = Path(config.hf_model)
    if not (model_dir / MODEL_CONFIG).is_file():
        raise UsageError(
            f"--hf-model {config.hf_model}: no config.json there",
            "pass a local folder saved by transformers' save_pretrained (e.g. microsoft/phi-1)",
        )
    return ResolvedModel(model_dir=model_dir, source="hf-model", given=config.hf_model)


def resolve_tokenizer(explicit: str | None, model: ResolvedModel) -> Path:
    """``--tokenizer``, else tokenizer.json beside the model or the one its run was trained with."""
    if explicit:
        from phi_hpc.fetch import resolve_tokenizer as resolve_named

        return resolve_named(explicit)
    found = model.checkpoint.tokenizer()
    if found is not None:
        return found
    raise UsageError(
        f"no tokenizer.json in {model.model_dir} or its run",
        "pass --tokenizer PATH or a hub id (phi-1's: --tokenizer microsoft/phi-1)",
    )
