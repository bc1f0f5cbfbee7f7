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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.fileio import atomic_write, write_json
from phi_hpc.run_layout import RunLayout, step_of_name


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
    train_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of every step

    def to_dict(self) -> dict:
        return {
            "run_dir": self.run_dir,
            "tasks": self.tasks,
            "points": [asdict(p) for p in self.points],
            "val_losses": [{"step": s, "val_loss": v} for s, v in self.val_losses],
            "train_losses": [{"step": s, "loss": v} for s, v in self.train_losses],
        }


def read_losses(metrics_path: Path, key: str = "val_loss") -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` (``val_loss`` or the training ``loss``) from the trainer's metrics file,
    sorted, the last line of a step winning (a resumed run redoes steps). Safe while the trainer is
    appending: :func:`phi_hpc.train.metrics.read_metrics`'s rule for a bad line applies."""
    from phi_hpc.train.metrics import read_metrics

    losses: dict[int, float] = {}
    for record in read_metrics(metrics_path):
        if record.get(key) is not None and record.get("step") is not None:
            losses[int(record["step"])] = float(record[key])
    return sorted(losses.items())


def read_val_losses(metrics_path: Path) -> list[tuple[int, float]]:
    return read_losses(metrics_path, "val_loss")


def _step_of(eval_dir: Path, results: dict | None) -> int | None:
    """The checkpoint step an evaluation belongs to: recorded by ``eval run``, else the folder name."""
    if results:
        step = (results.get("model") or {}).get("step")
        if isinstance(step, int):
            return step
    return step_of_name(eval_dir.name)


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


def collect_evaluations(run_dir: Path) -> list[CurvePoint]:
    """One point per evaluated (or pending) checkpoint of ``run_dir``, by step; losses not filled in.

    Cheap (reads only ``RUN/eval/*/results.json``): ``phi-hpc status`` shows pass@1 so far from it.
    """
    eval_root = RunLayout(run_dir).eval_root
    points: list[CurvePoint] = []
    if not eval_root.is_dir():
        return points
    for candidate in sorted(p for p in eval_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        results_path = candidate / "results.json"
        results = None
        if results_path.is_file():
            try:
                results = json.loads(results_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise PhiError(
                    f"{results_path}:{exc.lineno}: invalid JSON", "rerun `phi-hpc eval run` for that checkpoint"
                ) from None
        step = _step_of(candidate, results)
        if step is None:
            continue  # not an evaluation folder of a checkpoint (e.g. a hand-made scratch dir)
        point = CurvePoint(step=step, eval_dir=str(candidate), pending=results is None)
        if results is not None:
            point.pass_at_1 = _pass_at_1(results, results_path)
        points.append(point)
    return _one_per_step(points)


def collect_curve(run_dir: str | Path) -> Curve:
    """Gather every evaluation folder of ``run_dir`` and the training/validation losses into one table."""
    layout = RunLayout(run_dir)
    run_dir = layout.root
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist", "pass the RUN folder that submit/train created")
    val_losses = read_val_losses(layout.metrics)
    train_losses = read_losses(layout.metrics, "loss")
    points = collect_evaluations(run_dir)
    for point in points:
        point.val_loss_step, point.val_loss = _loss_at(val_losses, point.step)
    if not points and not val_losses and not train_losses:
        raise PhiError(
            f"{run_dir}: no evaluations under {layout.eval_root} and no losses in metrics.jsonl",
            "submit with --eval-every N, or run `phi-hpc eval run -o RUN/eval/step-N`",
        )
    tasks = sorted({task for p in points for task in p.pass_at_1})
    return Curve(run_dir=str(run_dir), points=points, tasks=tasks, val_losses=val_losses, train_losses=train_losses)


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
        raise PhiError(
            "matplotlib is not installed, so the curve cannot be drawn",
            "pip install 'phi-hpc[plot]' (the table and curve.json were still written)",
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), constrained_layout=True)
    _plot_pass_at_1(top, curve)
    top.set_title(f"{Path(curve.run_dir).name}: evaluation by checkpoint")
    _plot_losses(bottom, curve)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(png_path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def _plot_pass_at_1(axis, curve: Curve) -> None:
    """pass@1 in percent, never below 0 and at least 0-5 % tall (all-zero scores stay a visible line)."""
    highest = 0.0
    for task in curve.tasks:
        steps = [p.step for p in curve.points if task in p.pass_at_1]
        values = [100.0 * p.pass_at_1[task] for p in curve.points if task in p.pass_at_1]
        highest = max([highest, *values])
        axis.plot(steps, values, marker="o", label=task)
    axis.set_ylim(0.0, min(100.0, max(5.0, highest * 1.15)))
    axis.set_ylabel("pass@1 (%)")
    if curve.tasks:
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no finished evaluations yet", ha="center", va="center", transform=axis.transAxes)
    axis.grid(alpha=0.3)


def _plot_losses(axis, curve: Curve) -> None:
    """Training loss (every step, thin) and validation loss (markers); limits from finite values only."""
    finite = [v for _, v in [*curve.train_losses, *curve.val_losses] if math.isfinite(v)]
    if curve.train_losses:
        axis.plot(
            [s for s, _ in curve.train_losses],
            [v for _, v in curve.train_losses],
            linewidth=0.8,
            color="tab:blue",
            alpha=0.7,
            label="training loss",
        )
    if curve.val_losses:
        axis.plot(
            [s for s, _ in curve.val_losses],
            [v for _, v in curve.val_losses],
            marker=".",
            color="tab:red",
            label="validation loss",
        )
    if finite:
        low, high = min(finite), max(finite)
        pad = max((high - low) * 0.05, 1e-3)
        axis.set_ylim(max(0.0, low - pad), high + pad)
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no losses in metrics.jsonl", ha="center", va="center", transform=axis.transAxes)
    axis.set_ylabel("loss")
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)


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
    png = Path(png_path) if png_path else RunLayout(run_dir).curve_png
    json_path = png.with_suffix(".json")
    write_json(json_path, curve.to_dict())
    plot_curve(curve, png)
    return curve, {"json": str(json_path), "png": str(png)}
