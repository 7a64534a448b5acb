"""Where a training run reports: sinks, small objects with one job each (the events
they receive, and the `Sink` base: events.py).

Sinks are called in list order, so `default_sinks` puts the checkpoint before the
metrics and the terminal: a crash never leaves metrics ahead of the weights.
"""


from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError, LenetError, note
from ..training import checkpoint
from ..training.config import TrainConfig
from ..training.loop import HistoryRow
from .console import Console
from .directory import RunDir
from .events import EpochEnd, Progress, RunFinish, RunStart, RunStop, Sink


class RecordSink(Sink):
    """config.json: what was run, on what data, where, with which versions."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_start(self, start: RunStart) -> None:
        self.run_dir.write_json(RunDir.CONFIG, start.record)


class CheckpointSink(Sink):
    """checkpoint.pt after every epoch and when stopped mid-epoch (atomic writes)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.path = run_dir.checkpoint

    def on_epoch(self, epoch: EpochEnd) -> None:
        checkpoint.save(self.path, epoch.state())

    def on_stop(self, stop: RunStop) -> None:
        if stop.state is not None:  # a non-finite loss keeps the last good checkpoint
            checkpoint.save(self.path, stop.state())


class MetricsCsvSink(Sink):
    """metrics.csv, rewritten from the whole history so a resumed run stays consistent."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_epoch(self, epoch: EpochEnd) -> None:
        self.run_dir.write_metrics(epoch.history)


class CurvesSink(Sink):
    """curves.png, the book's figure, drawn once when the run ends (however it ends)."""

    def __init__(self, run_dir: RunDir, title: str) -> None:
        self.run_dir, self.title = run_dir, title
        self.eval_name = "test"

    def on_start(self, start: RunStart) -> None:
        self.eval_name = start.eval_name

    def on_stop(self, stop: RunStop) -> None:
        self._plot(stop.history)

    def on_finish(self, finish: RunFinish) -> None:
        self._plot(finish.history)

    def _plot(self, history: list[HistoryRow]) -> None:
        from .plots import plot_curves  # matplotlib: only when a run ends

        if history:
            plot_curves(history, self.run_dir.file(RunDir.CURVES), eval_name=self.eval_name,
                        title=self.title)


class OODSink(Sink):
    """RUN/ood-detectors.json and .npz: the out-of-distribution detectors, fitted on the
    training images once the run completes. A failure is a note, not an error: the run
    itself finished, and `lenet ood fit RUN` can try again."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_finish(self, finish: RunFinish) -> None:
        if finish.ood is None:
            return
        try:
            finish.ood().save(self.run_dir.path)
        except LenetError as e:
            note(f"no out-of-distribution detectors ({e}); fit them with: "
                 f"lenet ood fit {self.run_dir.path}")


class ResultsJsonSink(Sink):
    """results.json, the final figures; its presence marks a finished run."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_finish(self, finish: RunFinish) -> None:
        self.run_dir.write_json(RunDir.RESULTS, finish.final)


class ConsoleSink(Sink):
    """The terminal: what runs where, a progress bar, one table row per epoch, the book's
    closing lines."""

    def __init__(self, console: Console, run_dir: RunDir) -> None:
        self.console, self.run_dir = console, run_dir
        self.bar: Any = None
        self.eval_name = "test"

    def on_start(self, start: RunStart) -> None:
        self.eval_name = start.eval_name
        action = f"resuming at epoch {start.start_epoch + 1}" if start.resuming else "training"
        record = start.record
        self.console.print(f"{action} {start.config.model} ({record['parameters']:,} parameters) "
                           f"on {start.dataset_title} from {record['dataset']['source']} on "
                           f"{record['device']}")
        self.console.print(f"run directory: {self.run_dir.path}")
        self.console.table_header(start.eval_name)
        for row in start.history:
            self.console.table_row(row, start.eval_name)

    def on_step(self, progress: Progress) -> None:
        if progress.done:
            self._close_bar()
            return
        if self.bar is None:
            self.bar = self.console.bar(progress.total, progress.steps,
                                        f"epoch {progress.epoch + 1}/{progress.epochs}")
        self.bar.update(progress.steps - self.bar.n)
        if progress.loss is not None:
            self.bar.set_postfix(loss=f"{progress.loss:.4f}", refresh=False)

    def on_epoch(self, epoch: EpochEnd) -> None:
        self._close_bar()
        self.console.table_row(epoch.row, self.eval_name)
        if epoch.reached_target is not None:
            row: Mapping[str, Any] = epoch.row  # the key is test_acc or val_acc
            accuracy = row[f"{self.eval_name}_acc"]
            self.console.print(f"reached {self.eval_name} accuracy {accuracy:.4f} >= "
                               f"{epoch.reached_target} after epoch {epoch.row['epoch']}: "
                               "stopping")

    def on_stop(self, stop: RunStop) -> None:
        self._close_bar()
        if stop.reason == "interrupted":
            self.console.print(stop.message)

    def on_finish(self, finish: RunFinish) -> None:
        self.console.book_lines(finish.history[-1], finish.eval_name, finish.examples_per_sec,
                                finish.device_type)
        self.console.print(f"results in {self.run_dir.path}: {RunDir.METRICS}, {RunDir.CURVES}, "
                           f"{checkpoint.FILENAME}, {RunDir.RESULTS}")

    def close(self) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoardSink(Sink):
    """Each epoch's metrics as TensorBoard scalars, in RUN/tensorboard."""

    def __init__(self, run_dir: RunDir) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: "
                              "pip install tensorboard") from None
        self.make: Callable[[], Any] = lambda: SummaryWriter(
            log_dir=str(run_dir.file("tensorboard")))
        self.writer: Any = None  # made when the run starts: no files from a process that
        # only builds the sinks (ranks other than 0 under torchrun: OnlyIf)

    def on_start(self, start: RunStart) -> None:
        self.writer = self.make()

    def on_epoch(self, epoch: EpochEnd) -> None:
        for key, value in epoch.row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch.row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def default_sinks(run_dir: RunDir, config: TrainConfig, console: Console) -> list[Sink]:
    """What `lenet train` writes and shows: record, checkpoint, metrics, curves, OOD
    detectors, results, terminal and (with --tensorboard) TensorBoard, in that order."""
    sinks: list[Sink] = [RecordSink(run_dir), CheckpointSink(run_dir), MetricsCsvSink(run_dir),
                         CurvesSink(run_dir, f"{config.model} on {config.dataset}"),
                         OODSink(run_dir), ResultsJsonSink(run_dir),
                         ConsoleSink(console, run_dir)]
    if config.tensorboard:
        sinks.append(TensorBoardSink(run_dir))
    return sinks
