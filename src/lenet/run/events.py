"""What a training run tells its sinks: the events, the `Sink` base, and dispatch.

`Run.fit` (lenet/run/record.py) computes; it tells every sink what happened, in this
order of events:

    on_start(RunStart)     once, after set-up (also when resuming)
    on_step(Progress)      at the start of each epoch, every few steps, and once
                           with `done=True` when the epoch's training pass ends
    on_epoch(EpochEnd)     after each epoch's evaluation
    on_stop(RunStop)       stopped early: Ctrl-C ("interrupted") or a
                           non-finite loss ("failed")
    on_finish(RunFinish)   the run completed
    close()                always, last, even after an exception

A sink overrides only the events it cares about (the `Sink` base class does
nothing for the others). Sinks are called in list order, so `default_sinks`
puts the checkpoint before the metrics and the terminal: a crash never leaves
metrics ahead of the weights. To add a behaviour (a logger, "only rank 0
writes"), write a sink or wrap one; see `OnlyIf`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..training.checkpoint import Payload
from ..training.config import TrainConfig
from ..training.loop import HistoryRow
from .directory import RunDir


@dataclass(frozen=True)
class RunStart:
    run_dir: RunDir
    config: TrainConfig
    record: dict[str, Any]  # what config.json holds: resolved config, data, environment
    history: list[HistoryRow]  # rows of the epochs done before (a resumed run)
    start_epoch: int  # epochs already done
    resuming: bool  # continues from a checkpoint
    eval_name: str  # "test", or "val" with a validation split
    dataset_title: str
    steps_per_epoch: int


@dataclass(frozen=True)
class Progress:
    epoch: int  # 0-based
    epochs: int
    steps: int  # steps of this epoch done so far
    total: int  # steps in the epoch
    loss: float | None  # mean training loss so far this epoch (None before the first report)
    done: bool = False  # the epoch's training pass has ended (finished or stopped)


@dataclass(frozen=True)
class EpochEnd:
    row: HistoryRow  # this epoch's metrics row (metrics.csv's columns)
    history: list[HistoryRow]  # every row so far, this one last
    state: Callable[[], Payload]  # the checkpoint that resumes after this epoch
    eval_name: str
    reached_target: float | None  # the --target-accuracy this epoch reached (the run ends)


@dataclass(frozen=True)
class RunStop:
    reason: str  # "interrupted" (Ctrl-C) or "failed" (non-finite loss)
    history: list[HistoryRow]
    state: Callable[[], Payload] | None  # mid-epoch progress to save; None: nothing new
    message: str


@dataclass(frozen=True)
class RunFinish:
    final: dict[str, Any]  # what results.json holds
    history: list[HistoryRow]
    eval_name: str
    examples_per_sec: float
    device_type: str  # "cpu", "cuda", "mps"
    # The out-of-distribution detectors (lenet.ood.fitted.Guard), fitted when called
    ood: Callable[[], Any] | None = None


class Sink:
    """Does nothing on every event; subclasses override what they need."""

    def on_start(self, start: RunStart) -> None:
        pass

    def on_step(self, progress: Progress) -> None:
        pass

    def on_epoch(self, epoch: EpochEnd) -> None:
        pass

    def on_stop(self, stop: RunStop) -> None:
        pass

    def on_finish(self, finish: RunFinish) -> None:
        pass

    def close(self) -> None:
        pass


class OnlyIf(Sink):
    """Forwards every event to `sink` only when `condition` holds, e.g. to let one process
    of several write the record: `OnlyIf(CheckpointSink(run_dir), rank == 0)`."""

    def __init__(self, sink: Sink, condition: bool) -> None:
        self.sink, self.condition = sink, condition

    def on_start(self, start: RunStart) -> None:
        if self.condition:
            self.sink.on_start(start)

    def on_step(self, progress: Progress) -> None:
        if self.condition:
            self.sink.on_step(progress)

    def on_epoch(self, epoch: EpochEnd) -> None:
        if self.condition:
            self.sink.on_epoch(epoch)

    def on_stop(self, stop: RunStop) -> None:
        if self.condition:
            self.sink.on_stop(stop)

    def on_finish(self, finish: RunFinish) -> None:
        if self.condition:
            self.sink.on_finish(finish)

    def close(self) -> None:
        if self.condition:
            self.sink.close()


class Sinks:
    """Calls one event on every sink, in order."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: str, payload: Any) -> None:
        for sink in self.sinks:
            getattr(sink, event)(payload)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
