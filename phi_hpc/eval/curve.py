"""Learning curves of a run: pass@1 of every evaluated checkpoint beside the validation loss.

A pretraining run chained with ``submit pretrain --eval-every N`` leaves one evaluation folder per
checkpoint under ``RUN/eval/`` (``RUN/eval/step-<N>/results.json``, written by ``eval run``) and the
validation losses in ``RUN/metrics.jsonl``. This module only reads those files, so it works while the
run is still going (half-finished evaluations have no ``results.json`` yet and are listed as pending)
and never imports torch.

Outputs, all beside the evaluations: ``curve.json`` (the table, machine-readable), ``curve.png``
(pass@1 and validation loss against step; matplotlib with the Agg backend so it renders on a login
node without a display).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write, write_json

EVAL_SUBDIR = "eval"
STEP_DIR_PATTERN = re.compile(r"(?:step[-_]?)?(\d+)")


def eval_dir_for_step(run_dir: str | Path, step: int) -> Path:
    """Where the evaluation of checkpoint ``step`` of ``run_dir`` lives (the one layout curve reads)."""
    return Path(run_dir) / EVAL_SUBDIR / f"step-{int(step)}"


@dataclass
class CurvePoint:
    """One evaluated (or pending) checkpoint."""

    step: int
    eval_dir: str
    pass_at_1: dict[str, float] = field(default_factory=dict)  # task -> pass@1, absent while pending
    val_loss: float | None = None  # the validation loss measured at this step, or the last before it
    val_loss_step: int | None = None
    pending: bool = False


@dataclass
class Curve:
    run_dir: str
    points: list[CurvePoint]
    tasks: list[str]
    val_losses: list[tuple[int, float]]  # every (step, val_loss) line of metrics.jsonl

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "tasks": self.tasks, "points": [asdict(p) for p in self.points],
                "val_losses": [{"step": s, "val_loss": v} for s, v in self.val_losses]}


def read_val_losses(metrics_path: Path) -> list[tuple[int, float]]:
    """``(step, val_loss)`` from the trainer's metrics file, sorted; torn last lines are skipped.

    The trainer may be appending while we read (curve is safe to run mid-training), so a line cut in
    half at the end is expected and not an error; a malformed line elsewhere is.
    """
    if not metrics_path.is_file():
        return []
    losses: dict[int, float] = {}
    lines = metrics_path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise PhiError(f"{metrics_path}:{number}: not a JSON line",
                           "the metrics file is damaged; remove or fix that line") from None
        if isinstance(record, dict) and record.get("val_loss") is not None and record.get("step") is not None:
            losses[int(record["step"])] = float(record["val_loss"])
    return sorted(losses.items())


def _step_of(eval_dir: Path, results: dict | None) -> int | None:
    """The checkpoint step an evaluation belongs to: recorded by ``eval run``, else the folder name."""
    if results:
        step = (results.get("model") or {}).get("step")
        if isinstance(step, int):
            return step
    match = STEP_DIR_PATTERN.fullmatch(eval_dir.name)
    return int(match.group(1)) if match else None


def _pass_at_1(results: dict, where: Path) -> dict[str, float]:
    tasks = results.get("tasks")
    if not isinstance(tasks, dict):
        raise PhiError(f"{where}: no 'tasks' mapping", "was it written by `phi-hpc eval run`?")
    out = {}
    for task, summary in tasks.items():
        value = summary.get("pass@1") if isinstance(summary, dict) else None
        if value is not None:
            out[task] = float(value)
    return out


def _loss_at(val_losses: list[tuple[int, float]], step: int) -> tuple[int | None, float | None]:
    """The validation loss at ``step``, or the most recent one before it (what the model had seen)."""
    best: tuple[int | None, float | None] = (None, None)
    for loss_step, loss in val_losses:
        if loss_step > step:
            break
        best = (loss_step, loss)
    return best


def collect_curve(run_dir: str | Path) -> Curve:
    """Gather every evaluation folder of ``run_dir`` and the validation losses into one table."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist", "pass the RUN folder that submit/train created")
    eval_root = run_dir / EVAL_SUBDIR
    val_losses = read_val_losses(run_dir / "metrics.jsonl")
    points: list[CurvePoint] = []
    if eval_root.is_dir():
        for candidate in sorted(p for p in eval_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            results_path = candidate / "results.json"
            results = None
            if results_path.is_file():
                try:
                    results = json.loads(results_path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as exc:
                    raise PhiError(f"{results_path}:{exc.lineno}: invalid JSON",
                                   "rerun `phi-hpc eval run` for that checkpoint") from None
            step = _step_of(candidate, results)
            if step is None:
                continue  # not an evaluation folder of a checkpoint (e.g. a hand-made scratch dir)
            point = CurvePoint(step=step, eval_dir=str(candidate), pending=results is None)
            if results is not None:
                point.pass_at_1 = _pass_at_1(results, results_path)
            point.val_loss_step, point.val_loss = _loss_at(val_losses, step)
            points.append(point)
    if not points and not val_losses:
        raise PhiError(f"{run_dir}: no evaluations under {eval_root} and no val_loss in metrics.jsonl",
                       "submit with --eval-every N, or run `phi-hpc eval run -o RUN/eval/step-N`")
    points = _one_per_step(points)
    tasks = sorted({task for p in points for task in p.pass_at_1})
    return Curve(run_dir=str(run_dir), points=points, tasks=tasks, val_losses=val_losses)


def _one_per_step(points: list[CurvePoint]) -> list[CurvePoint]:
    """One point per step: ``RUN/eval/latest`` and ``RUN/eval/step-20`` may be the same checkpoint.

    A finished evaluation wins over a pending one; between finished ones, the newest results.json.
    """
    def rank(point: CurvePoint) -> tuple:
        results = Path(point.eval_dir) / "results.json"
        return (not point.pending, results.stat().st_mtime if results.is_file() else 0.0)

    best: dict[int, CurvePoint] = {}
    for point in points:
        if point.step not in best or rank(point) > rank(best[point.step]):
            best[point.step] = point
    return [best[step] for step in sorted(best)]


def plot_curve(curve: Curve, png_path: Path) -> None:
    """Two panels sharing the step axis: pass@1 per task on top, validation loss below."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise PhiError("matplotlib is not installed, so the curve cannot be drawn",
                       "pip install 'phi-hpc[plot]' (the table and curve.json were still written)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), constrained_layout=True)
    for task in curve.tasks:
        steps = [p.step for p in curve.points if task in p.pass_at_1]
        values = [100.0 * p.pass_at_1[task] for p in curve.points if task in p.pass_at_1]
        top.plot(steps, values, marker="o", label=task)
    top.set_ylabel("pass@1 (%)")
    top.set_title(f"{Path(curve.run_dir).name}: evaluation by checkpoint")
    if curve.tasks:
        top.legend()
    else:
        top.text(0.5, 0.5, "no finished evaluations yet", ha="center", va="center", transform=top.transAxes)
    top.grid(alpha=0.3)
    if curve.val_losses:
        bottom.plot([s for s, _ in curve.val_losses], [v for _, v in curve.val_losses], marker=".", color="tab:red")
    else:
        bottom.text(0.5, 0.5, "no val_loss lines in metrics.jsonl", ha="center", va="center",
                    transform=bottom.transAxes)
    bottom.set_ylabel("validation loss")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(png_path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def render_table(curve: Curve):
    """A rich table: one row per checkpoint, pass@1 per task (in %) and the validation loss."""
    from rich.table import Table

    table = Table(title=f"eval curve: {curve.run_dir}")
    table.add_column("step", justify="right")
    for task in curve.tasks:
        table.add_column(f"{task} pass@1", justify="right")
    table.add_column("val loss", justify="right")
    for point in curve.points:
        cells = [str(point.step)]
        for task in curve.tasks:
            value = point.pass_at_1.get(task)
            cells.append("pending" if point.pending else ("-" if value is None else f"{100 * value:.2f}%"))
        loss = point.val_loss
        cells.append("-" if loss is None or math.isnan(loss) else f"{loss:.4f}")
        table.add_row(*cells)
    return table


def write_curve(run_dir: str | Path, png_path: str | Path | None = None) -> tuple[Curve, dict]:
    """Collect, then write ``curve.json`` and the PNG; returns the curve and where things went."""
    curve = collect_curve(run_dir)
    eval_root = Path(run_dir) / EVAL_SUBDIR
    png = Path(png_path) if png_path else eval_root / "curve.png"
    json_path = png.with_suffix(".json")
    write_json(json_path, curve.to_dict())
    plot_curve(curve, png)
    return curve, {"json": str(json_path), "png": str(png)}
