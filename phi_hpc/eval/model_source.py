"""Which model and tokenizer ``eval run`` loads, from what the user typed.

``--checkpoint`` accepts every path a user is likely to have at hand: one of our step folders
(itself a Hugging Face folder), its ``hf/`` subfolder, a run's ``checkpoints/`` folder or its
``latest`` pointer, or the run folder, and follows them to a step. ``--hf-model`` is any local
transformers Phi folder. The tokenizer is found without loading torch, so a wrong path fails in
milliseconds: ``--tokenizer``, else ``tokenizer.json`` beside the model or in its run, else the one
the run's data was prepared with (the data folder's ``manifest.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phi_hpc.errors import UsageError

if TYPE_CHECKING:
    from phi_hpc.eval.run import EvalRunConfig


@dataclass(frozen=True)
class ResolvedModel:
    """The HF-format folder to load, and what we know about where it came from."""

    model_dir: Path
    source: str  # "checkpoint" | "hf-model"
    given: str  # what the user typed
    step: int | None = None  # training step, when the folder is one of our checkpoints
    run_dir: Path | None = None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _step_from_name(name: str) -> int | None:
    digits = name.removeprefix("step-").removeprefix("step_").removeprefix("global_step")
    return int(digits) if digits.isdigit() else None


def resolve_checkpoint(path: str | Path) -> ResolvedModel:
    """Any way a user names our checkpoint (run, ``checkpoints/``, ``latest``, step folder, HF folder).

    Finding the folder is :func:`phi_hpc.model.hf.resolve_checkpoint_dir`'s job; here we add the
    step and the run it belongs to (layout ``RUN/checkpoints/<step>[/hf]``) so results land on a curve.
    """
    from phi_hpc.model.hf import resolve_checkpoint_dir

    return _described(Path(resolve_checkpoint_dir(path)), str(path))


def _described(model_dir: Path, given: str) -> ResolvedModel:
    """Recover the step and the run from ``RUN/checkpoints/<step>[/hf]`` or the copy ``submit
    --eval-every`` keeps of it, ``RUN/eval/checkpoints/<step>``."""
    step_dir = model_dir.parent if model_dir.name == "hf" else model_dir
    step = _step_from_name(step_dir.name)
    run_dir = None
    if step_dir.parent.name == "checkpoints":
        run_dir = next((folder for folder in step_dir.parents[1:4] if (folder / "config.yaml").is_file()),
                       step_dir.parent.parent)
    return ResolvedModel(model_dir=model_dir, source="checkpoint", given=given, step=step, run_dir=run_dir)


def resolve_model(config: EvalRunConfig) -> ResolvedModel:
    if config.checkpoint:
        return resolve_checkpoint(config.checkpoint)
    model_dir = Path(config.hf_model)
    if not _is_model_dir(model_dir):
        raise UsageError(f"--hf-model {config.hf_model}: no config.json there",
                         "pass a local folder saved by transformers' save_pretrained (e.g. microsoft/phi-1)")
    return ResolvedModel(model_dir=model_dir, source="hf-model", given=config.hf_model)


def _strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings_in(v)]
    return []


def _tokenizer_from_run_config(run_dir: Path) -> Path | None:
    """The tokenizer the run's data was prepared with, via the data folder's manifest.json.

    The trainer's config names data prefixes or folders; whichever folder of those holds a
    ``manifest.json`` tells us the tokenizer path ``prepare`` used. Generic on purpose: it reads
    only the two documented files, not the trainer's config schema.
    """
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    bases = [Path.cwd(), run_dir]
    recorded_run_dir = config.get("run_dir") if isinstance(config, dict) else None
    if isinstance(recorded_run_dir, str) and not Path(recorded_run_dir).is_absolute():
        # relative paths in the config were relative to where training started: RUN minus run_dir
        depth = len(Path(recorded_run_dir).parts)
        bases.insert(0, run_dir.resolve().parents[depth - 1] if depth else run_dir.resolve())
    for text in _strings_in(config):
        if not text or "\n" in text:
            continue
        starts = [Path(text)] if Path(text).is_absolute() else [base / text for base in bases]
        for folder in [f for start in starts for f in (start, *list(start.parents)[:2])]:
            manifest = folder / "manifest.json"
            if manifest.is_file():
                try:
                    tok = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer", {}).get("path")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if tok:
                    tok_path = Path(tok) if Path(tok).is_absolute() else folder / tok
                    if tok_path.exists():
                        return tok_path
    return None


def resolve_tokenizer(explicit: str | None, model: ResolvedModel) -> Path:
    """``--tokenizer``, else tokenizer.json in the model folder, its step folder or its run."""
    if explicit:
        from phi_hpc.fetch import resolve_tokenizer as resolve_named

        return resolve_named(explicit)
    folders = [model.model_dir, model.model_dir.parent] if model.model_dir.name == "hf" else [model.model_dir]
    if model.run_dir:
        folders.append(model.run_dir)
    for folder in folders:
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    if model.run_dir and (found := _tokenizer_from_run_config(model.run_dir)):
        return found
    raise UsageError(f"no tokenizer.json in {model.model_dir} or its run",
                     "pass --tokenizer PATH or a hub id (phi-1's: --tokenizer microsoft/phi-1)")
