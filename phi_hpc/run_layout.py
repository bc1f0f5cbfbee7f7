"""Where every file of a run folder lives, which checkpoint a path means, and which tokenizer a run used.

A run folder ``RUN`` is written by several stages; this module is the one place that names its files::

    RUN/config.yaml                     the resolved training config (submit writes it, the trainer rewrites it)
    RUN/metrics.jsonl                   one JSON line per step, ``val_loss`` lines (phi_hpc.train.metrics)
    RUN/summary.json, deepspeed.json    the trainer's last summary and its DeepSpeed config
    RUN/tensorboard/, RUN/data-cache/   TensorBoard event files; finetuning's tokenized jsonl cache
    RUN/checkpoints/<step>/             one checkpoint (a Hugging Face folder + deepspeed/, rng/,
                                        trainer_state.json written last; phi_hpc.train.checkpoint)
    RUN/checkpoints/latest              one line: the name of the newest complete step folder
    RUN/checkpoints/.partial-<step>/    a save in progress (removed at the next start)
    RUN/eval/step-<N>/                  ``eval run`` of checkpoint N (results.json; read by ``eval curve``)
    RUN/eval/checkpoints/<N>/           the model files ``--eval-every`` keeps for that eval (snapshots)
    RUN/eval/curve.json, curve.png      ``eval curve``
    RUN/run.json, attempts/, code/, logs/<job>/<id>/attempt-<k>/, submitit/   what ``submit`` records

Resolving a checkpoint (:func:`find_checkpoint`): a user may name a run folder, its ``checkpoints/``
folder, the ``latest`` pointer, a step folder, or the Hugging Face folder itself; all are followed to
one step folder. A step folder whose model sits in an ``hf/`` subfolder is still accepted (older
layouts and hand-made folders; the trainer writes the model into the step folder itself).

Finding a run's tokenizer (:meth:`RunLayout.tokenizer`): ``tokenizer.json`` in the run folder, else the
one the run's training data names: a finetuning run's ``data.tokenizer``, or for pretraining the
``tokenizer.path`` in the ``manifest.json`` of a ``prepare`` folder named by ``data.paths``.
Nothing here imports torch: login-node commands use it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"  # written last into a step folder: its presence means complete
PARTIAL_PREFIX = ".partial-"
EVAL_DIR = "eval"
EVAL_STEP_PREFIX = "step-"
MODEL_CONFIG = "config.json"  # a Hugging Face folder's marker (phi_hpc.model.hf writes it last)
HF_SUBDIR = "hf"  # older layout: RUN/checkpoints/<step>/hf/ held the model
TOKENIZER_FILE = "tokenizer.json"
RUN_FILE = "run.json"
ATTEMPTS_DIR = "attempts"
ATTEMPTS_FILE = "attempts.jsonl"  # runs submitted before per-job attempt files: still read
CODE_DIR = "code"
_STEP_NAME = re.compile(r"(?:(?:global_)?step[-_]?)?(\d+)")


@dataclass(frozen=True)
class CheckpointFolder:
    """``RUN/checkpoints/``: step folders, the ``latest`` pointer and saves in progress."""

    directory: Path

    @property
    def latest_pointer(self) -> Path:
        return self.directory / LATEST

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def partial_dir(self, step: int) -> Path:
        return self.directory / f"{PARTIAL_PREFIX}{step}"

    def partials(self) -> list[Path]:
        return sorted(self.directory.glob(f"{PARTIAL_PREFIX}*")) if self.directory.is_dir() else []

    def complete_steps(self) -> list[int]:
        """Steps whose folder holds ``trainer_state.json`` (written last), oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and (p / STATE_FILE).is_file())

    def latest_step(self) -> int | None:
        """The step ``latest`` names (None without one): cheap, for ``status`` and requeue decisions."""
        try:
            text = self.latest_pointer.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def latest(self) -> Path | None:
        """The step folder ``latest`` names; if the pointer is missing or stale, the newest complete one."""
        if self.latest_pointer.is_file():
            candidate = self.directory / self.latest_pointer.read_text(encoding="utf-8").strip()
            if (candidate / STATE_FILE).is_file():
                return candidate
        steps = self.complete_steps()
        return self.step_dir(steps[-1]) if steps else None


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ the trainer's files
    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def deepspeed_config(self) -> Path:
        return self.root / "deepspeed.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def data_cache(self) -> Path:
        return self.root / "data-cache"

    @property
    def checkpoints(self) -> CheckpointFolder:
        return CheckpointFolder(self.root / CHECKPOINTS_DIR)

    def step_dir(self, step: int) -> Path:
        return self.checkpoints.step_dir(step)

    # ------------------------------------------------------------------ evaluations
    @property
    def eval_root(self) -> Path:
        return self.root / EVAL_DIR

    def eval_dir(self, step: int) -> Path:
        """Where the evaluation of checkpoint ``step`` lives (what ``eval curve`` reads)."""
        return self.eval_root / eval_label(str(int(step)))

    def snapshot_dir(self, step: int) -> Path:
        """The model files of checkpoint ``step`` kept for its ``--eval-every`` evaluation."""
        return self.eval_root / CHECKPOINTS_DIR / str(int(step))

    @property
    def curve_png(self) -> Path:
        return self.eval_root / "curve.png"

    # ------------------------------------------------------------------ what submit records
    @property
    def run_record(self) -> Path:
        return self.root / RUN_FILE

    @property
    def attempts_dir(self) -> Path:
        return self.root / ATTEMPTS_DIR

    @property
    def legacy_attempts(self) -> Path:
        return self.root / ATTEMPTS_FILE

    @property
    def code(self) -> Path:
        return self.root / CODE_DIR

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    def job_logs(self, job_name: str) -> Path:
        return self.root / "logs" / job_name

    def log_dir(self, job_name: str, job_id: str, restarts: int) -> Path:
        return self.job_logs(job_name) / job_id / f"attempt-{restarts}"

    # ------------------------------------------------------------------ the tokenizer
    def tokenizer(self) -> Path | None:
        """The tokenizer this run was trained with (see the module docstring), or None."""
        if (self.root / TOKENIZER_FILE).is_file():
            return self.root / TOKENIZER_FILE
        config = self._config()
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        bases = self._bases(config.get("run_dir"))
        if data.get("format") == "jsonl" and isinstance(data.get("tokenizer"), str):
            found = next((p for p in _candidates(data["tokenizer"], bases) if p.is_file()), None)
            if found is not None:
                return found
        for entry in data.get("paths") or []:
            if isinstance(entry, str) and (found := _manifest_tokenizer(_candidates(entry, bases))):
                return found
        return None

    def _config(self) -> dict:
        """``config.yaml`` as plain YAML (no torch, no schema: any version's file); {} when unreadable."""
        import yaml

        try:
            config = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return config if isinstance(config, dict) else {}

    def _bases(self, recorded_run_dir) -> list[Path]:
        """Where a relative path of the config may start: where training started (``RUN`` minus the
        config's own relative ``run_dir``), the current folder, the run."""
        bases = [Path.cwd(), self.root]
        if isinstance(recorded_run_dir, str) and recorded_run_dir and not Path(recorded_run_dir).is_absolute():
            depth, resolved = len(Path(recorded_run_dir).parts), self.root.resolve()
            if depth <= len(resolved.parents):
                bases.insert(0, resolved.parents[depth - 1] if depth else resolved)
        return bases


def _candidates(text: str, bases: list[Path]) -> list[Path]:
    return [Path(text)] if Path(text).is_absolute() else [base / text for base in bases]


def _manifest_tokenizer(starts: list[Path]) -> Path | None:
    """The tokenizer ``prepare`` recorded for a ``data.paths`` entry (a folder, its manifest.json or a
    ``.bin/.idx`` prefix inside it: the entry and its two parents are probed)."""
    for start in starts:
        for folder in (start, *list(start.parents)[:2]):
            manifest = folder / "manifest.json"
            if not manifest.is_file():
                continue
            try:
                named = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer", {}).get("path")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(named, str) and named:
                path = Path(named) if Path(named).is_absolute() else folder / named
                if path.exists():
                    return path
    return None


def eval_label(checkpoint_name: str) -> str:
    """The eval folder name of a checkpoint folder's name: ``20`` -> ``step-20``; ``latest`` stays ``latest``."""
    return f"{EVAL_STEP_PREFIX}{checkpoint_name}" if checkpoint_name.isdigit() else checkpoint_name


def step_of_name(name: str) -> int | None:
    """The training step a folder name stands for: ``20``, ``step-20``, ``step_20``, ``step20``,
    ``global_step20`` (checkpoint folders, their eval folders, DeepSpeed's tags)."""
    match = _STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------- resolving checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """What a user's path resolved to: the folder to load, its step and its run when it has them."""

    folder: Path  # the Hugging Face folder (when it has config.json)
    step: int | None = None
    run: RunLayout | None = None

    @property
    def is_model(self) -> bool:
        return (self.folder / MODEL_CONFIG).is_file()

    def tokenizer(self) -> Path | None:
        """``tokenizer.json`` beside the model (its step folder when the model sits in ``hf/``), else the run's."""
        folders = [self.folder, self.folder.parent] if self.folder.name == HF_SUBDIR else [self.folder]
        for folder in folders:
            if (folder / TOKENIZER_FILE).is_file():
                return folder / TOKENIZER_FILE
        return self.run.tokenizer() if self.run is not None else None


def _read_latest(pointer: Path) -> Path:
    name = pointer.read_text(encoding="utf-8").strip()
    if not name:
        raise PhiError(f"{pointer} is empty", "the run has not completed a checkpoint yet")
    return Path(name) if Path(name).is_absolute() else pointer.parent / name


def _follow(path: Path) -> Path:
    """run -> checkpoints -> latest -> step -> hf: a bounded walk (no loops) to the folder meant."""
    candidate = path
    for _ in range(4):
        if candidate.is_file() and candidate.name == LATEST:
            candidate = _read_latest(candidate)
            continue
        if (candidate / MODEL_CONFIG).is_file():
            return candidate
        if (candidate / HF_SUBDIR / MODEL_CONFIG).is_file():
            return candidate / HF_SUBDIR
        if (candidate / LATEST).is_file():
            candidate = _read_latest(candidate / LATEST)
            continue
        if (candidate / CHECKPOINTS_DIR).is_dir():
            candidate = candidate / CHECKPOINTS_DIR
            continue
        break
    return candidate


def _origin(folder: Path) -> tuple[int | None, RunLayout | None]:
    """The step and run of ``RUN/checkpoints/<step>[/hf]`` or of a snapshot ``RUN/eval/checkpoints/<step>``."""
    step_dir = folder.parent if folder.name == HF_SUBDIR else folder
    if step_dir.parent.name != CHECKPOINTS_DIR:
        return step_of_name(step_dir.name), None
    holder = step_dir.parent.parent
    if not (holder / CONFIG_FILE).is_file() and holder.name == EVAL_DIR:
        holder = holder.parent  # a snapshot: RUN/eval/checkpoints/<step>
    return step_of_name(step_dir.name), RunLayout(holder)


def find_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint ``path`` means, following ``latest`` and run folders; the folder may lack a model
    (callers that load one use :func:`model_checkpoint`, which says what is missing)."""
    folder = _follow(Path(path))
    step, run = _origin(folder)
    return Checkpoint(folder=folder, step=step, run=run)


def model_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """:func:`find_checkpoint`, and a one-line error unless it is a folder with a model (config.json)."""
    found = find_checkpoint(path)
    if found.is_model:
        return found
    if not Path(path).exists():
        raise UsageError(f"checkpoint {path} does not exist", "check the path")
    raise UsageError(
        f"{path}: no {MODEL_CONFIG} here (nor in {HF_SUBDIR}/, nor via checkpoints/latest)",
        "give a Hugging Face Phi folder, a checkpoint step folder or a run folder",
    )
