"""Comparing finished runs: one table row each, trade-off plots, overlaid curves.

Used by `lenet compare RUN...` and at the end of `lenet sweep`. Everything is
read back from the run directories, so runs from different sessions, sweeps or
machines compare alike.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ..base.atomic import write_text
from ..base.tables import format_table
from ..data.datasets import evaluation_split
from ..errors import LenetError
from ..models.config import ModelConfig
from ..models.network import LeNet
from ..models.settings import ModelSettings
from ..models.summary import summarize
from ..run.directory import RunDir, read_metrics
from ..training.loop import row_value, rows_with
from .attempt import STOPPED


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    model: str
    settings: str  # the --set options, "k=v k=v"
    parameters: int
    macs: int  # multiply-adds per 28x28 example
    epochs: int
    eval_name: str
    accuracy: float  # final test (or val) accuracy
    best_accuracy: float
    wall_seconds: float  # training plus evaluation, all epochs
    finished: bool
    stopped: str = ""  # a search trial the scheduler stopped early: why (RUN/stopped.json)


def summarize_run(run_dir: str | Path) -> RunSummary:
    run = RunDir(run_dir)
    try:
        record = run.read_json(RunDir.CONFIG)
        history = read_metrics(run.file(RunDir.METRICS))
    except (OSError, ValueError) as e:
        raise LenetError(f"{run.path}: not a run directory with metrics ({e})") from e
    if not history:
        raise LenetError(f"{run.path}: no finished epoch yet")
    train, model_config = record["train"], ModelConfig.from_dict(record["model"])
    shape = (1, model_config.in_channels, *model_config.input_size)
    macs = sum(row.macs for row in summarize(LeNet(model_config), shape))
    eval_name = evaluation_split(train.get("val_split"))
    key = f"{eval_name}_acc"  # only in evaluated epochs (--eval-every)
    accuracies = [row_value(row, key) for row in rows_with(history, key)]
    if not accuracies:
        raise LenetError(f"{run.path}: no evaluated epoch yet")
    settings = " ".join(ModelSettings.from_dict(train.get("model_settings") or {}).to_args())
    return RunSummary(
        name=run.path.name, path=str(run.path), model=train["model"], settings=settings,
        parameters=record["parameters"], macs=macs, epochs=len(history), eval_name=eval_name,
        accuracy=accuracies[-1], best_accuracy=max(accuracies),
        wall_seconds=sum(row.get("wall_seconds", row["seconds"]) for row in history),
        finished=run.file(RunDir.RESULTS).exists(), stopped=_stopped(run))


def _stopped(run: RunDir) -> str:
    if not run.file(STOPPED).exists():
        return ""
    record = run.read_json(STOPPED)
    return f"epoch {record['epoch']}: {record['reason']}"


COLUMNS = ("run", "model", "settings", "parameters", "mult-adds", "epochs", "accuracy",
           "wall time (s)")


def _cells(s: RunSummary) -> tuple[str, ...]:
    accuracy = f"{s.accuracy:.4f}" + ("" if s.eval_name == "test" else " (val)")
    state = "" if s.finished else " (stopped early)" if s.stopped else " (unfinished)"
    return (s.name + state, s.model, s.settings or "-",
            f"{s.parameters:,}", f"{s.macs:,}", str(s.epochs), accuracy, f"{s.wall_seconds:.1f}")


def sort_by_accuracy(summaries: list[RunSummary]) -> list[RunSummary]:
    return sorted(summaries, key=lambda s: s.accuracy, reverse=True)


def markdown_table(summaries: list[RunSummary]) -> str:
    return format_table(COLUMNS, map(_cells, summaries), align="l" * len(COLUMNS),
                        markdown=True)


def write_csv(summaries: list[RunSummary], path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(summaries[0])))
    writer.writeheader()
    writer.writerows(asdict(s) for s in summaries)
    return write_text(path, buffer.getvalue())


def plot_tradeoffs(summaries: list[RunSummary], path: str | Path, title: str = "") -> Path:
    """Accuracy against parameters and against wall time: numbered points, a legend of names.

    Runs that stayed near chance (diverged, dead units) would squash the others into a
    line: they are drawn as triangles on the bottom edge instead.
    """
    learned = [s.accuracy for s in summaries if s.accuracy > 0.2]
    bottom = (min(learned) - 0.02) if learned else 0.0
    fig = Figure(figsize=(13, 5.2), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("parameters", "wall_seconds"),
                              ("parameters", "wall time (s), training + evaluation"),
                              strict=True):
        for i, s in enumerate(summaries):
            x, low = getattr(s, key), s.accuracy < bottom
            ax.scatter(x, bottom if low else s.accuracy, color=f"C{i % 10}", s=45,
                       marker="v" if low else "x" if s.stopped else "o", clip_on=False,
                       zorder=3, label=f"{i + 1}. {s.name} ({s.accuracy:.3f})"
                       + (" stopped early" if s.stopped else ""))
            ax.annotate(str(i + 1), (x, bottom if low else s.accuracy), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_ylim(bottom, None)
        ax.set_xlabel(label)
        ax.set_ylabel("final accuracy (triangles: near chance; crosses: stopped early)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title or "accuracy vs size and time")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_compared_curves(run_dirs: list[str | Path], path: str | Path, title: str = "") -> Path:
    """Learning curves of several runs: evaluation accuracy and training loss per epoch."""
    fig = Figure(figsize=(12, 4.8), dpi=110)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for i, run_dir in enumerate(run_dirs):
        run = RunDir(run_dir)
        history = read_metrics(run.file(RunDir.METRICS))
        split = evaluation_split(run.read_json(RunDir.CONFIG)["train"].get("val_split"))
        eval_key = f"{split}_acc"
        epochs = [r["epoch"] for r in history]
        stopped = run.file(STOPPED).exists()  # a search trial cut early: ends in a cross
        style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[i // 10 % 3],
                 "label": f"{i + 1}. {Path(run_dir).name}" + (" (stopped)" if stopped else ""),
                 "marker": "x" if stopped else None}
        rows = rows_with(history, eval_key)  # the evaluated epochs (--eval-every)
        acc_ax.plot([r["epoch"] for r in rows], [row_value(r, eval_key) for r in rows], **style,
                    markevery=[len(rows) - 1] if stopped and rows else None)
        loss_ax.plot(epochs, [r["train_loss"] for r in history], **style,
                     markevery=[len(epochs) - 1] if stopped else None)
    acc_ax.set_ylabel("test (or val) accuracy")
    loss_ax.set_ylabel("training loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title or "learning curves")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def to_json(summaries: list[RunSummary]) -> str:
    return json.dumps([asdict(s) for s in summaries], indent=2)

