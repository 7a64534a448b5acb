"""One trial of a search, on either backend: its lenet run trained (or resumed from its own
checkpoint), each epoch's validation metric told to the scheduler, and a clean stop when the
scheduler cuts it.

The trial's run directory is an ordinary lenet run (`lenet compare`, `lenet resume` work on
it) plus two files of the search:

    RUN/search.json    the trial's sampled values and every attempt: when it began, at which
                       epoch (0: from scratch; more: resumed from the run's checkpoint), where
    RUN/stopped.json   only for a trial the scheduler stopped early: the epoch, the metric's
                       value there, and why

A retried attempt (its worker or node died, or the driver did) opens the same directory, so
`Run.open(...).fit()` continues from the last epoch saved: lenet's resume keeps every
epoch's row once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run.console import Console
from ..run.directory import RunDir, read_metrics
from ..run.events import EpochEnd, RunStart, Sink
from ..run.record import Run
from ..run.stop import StopRequest
from ..training.config import TrainConfig
from ..training.loop import row_value, rows_with

SEARCH_JSON = "search.json"
STOPPED = "stopped.json"

# report(epoch, value) -> why the trial must stop now (the scheduler cut it, the search's
# budget is spent), or None: it goes on
Report = Callable[[int, float], str | None]


@dataclass(frozen=True)
class Outcome:
    status: str  # "completed", "stopped" (by the scheduler) or "interrupted" (Ctrl-C)
    epochs: int  # epochs recorded in the run
    value: float | None  # the metric at the last epoch
    resumed_from: int  # epochs this attempt found done (0: it began from scratch)


class Reporter(Sink):
    """Tells the scheduler each epoch's metric (after the checkpoint and metrics sinks wrote
    it) and asks the run to stop cleanly when told to; records the attempt on start."""

    def __init__(self, metric: str, report: Report, stop: StopRequest,
                 where: dict[str, Any], replay: bool) -> None:
        self.metric, self.report, self.stop, self.where = metric, report, stop, where
        self.replay = replay  # tell the epochs done before too (a new Optuna trial's rungs)
        self.start_epoch = 0
        self.cut: tuple[int, float, str] | None = None  # (epoch, value, why) it stopped at
        self.last: float | None = None

    def on_start(self, start: RunStart) -> None:
        self.start_epoch = start.start_epoch
        add_attempt(start.run_dir.path, {"began": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                         "resumed_from_epoch": start.start_epoch,
                                         "host": socket.gethostname(), **self.where})
        measured = rows_with(start.history, self.metric)
        for row in measured if self.replay else []:
            self.report(int(row["epoch"]), row_value(row, self.metric))
        if measured:
            self.last = row_value(measured[-1], self.metric)

    def on_epoch(self, epoch: EpochEnd) -> None:
        if self.metric not in epoch.row:  # an epoch --eval-every skips: nothing to report
            return
        value = self.last = row_value(epoch.row, self.metric)
        if self.cut is None and (why := self.report(int(epoch.row["epoch"]), value)):
            self.cut = int(epoch.row["epoch"]), value, why
            self.stop.request()  # the epoch loop ends here and saves


def read_record(run_dir: Path) -> dict[str, Any]:
    file = run_dir / SEARCH_JSON
    return RunDir(run_dir).read_json(SEARCH_JSON) if file.exists() else {}


def add_attempt(run_dir: Path, attempt: dict[str, Any]) -> None:
    record = read_record(run_dir)
    record.setdefault("attempts", []).append(attempt)
    RunDir(run_dir).write_json(SEARCH_JSON, record)


def mark_stopped(run_dir: Path, epoch: int, metric: str, value: float | None,
                 reason: str) -> None:
    """RUN/stopped.json: the scheduler stopped this trial after `epoch`."""
    RunDir(run_dir).write_json(STOPPED, {"epoch": epoch, "metric": metric, "value": value,
                                         "reason": reason})


def epochs_spent(out: Path) -> int:
    """Trial-epochs the search in `out` has trained, all its trials together (each epoch's
    row in a trial's metrics is written once, resumed or not)."""
    return sum(len(read_metrics(f)) for f in out.glob("trial-*/" + RunDir.METRICS))


def budget_spent(out: Path, budget: int | None) -> str | None:
    """Why the search must stop (its trial-epoch budget spent), or None."""
    if budget is not None and epochs_spent(out) >= budget:
        return f"the search's budget of {budget} trial-epochs is spent"
    return None


def run_trial(config: TrainConfig, values: dict[str, Any], metric: str, report: Report, *,
              where: dict[str, Any] | None = None, replay: bool = False) -> Outcome:
    """Train (or resume) the trial's run in OUT_DIR/NAME, reporting `metric` each epoch."""
    assert config.name is not None  # the search names every trial's run
    run_dir = Path(config.out_dir) / config.name
    if (run_dir / RunDir.RESULTS).exists() or (run_dir / STOPPED).exists():
        return finished(run_dir, metric)  # an attempt that ended but was not told: no redo
    # a directory with a record: resumed from its last checkpoint (or from the start: none)
    run = Run.open(run_dir) if (run_dir / RunDir.CONFIG).exists() else Run.create(config)
    record = read_record(run_dir)
    RunDir(run_dir).write_json(SEARCH_JSON, {**record, "values": values, "metric": metric})
    stop = StopRequest()
    reporter = Reporter(metric, report, stop, where or {}, replay)
    with open(run_dir / "train.log", "a") as log:
        console = Console(progress=False, stream=log)
        result = run.fit(console=console, stop=stop,
                         sinks=[*run.default_sinks(console), reporter])
    epochs = len(result.history)  # every epoch of the run, those resumed from included
    if result.completed:
        status = "completed"
    elif reporter.cut is not None:
        mark_stopped(run_dir, reporter.cut[0], metric, reporter.cut[1], reporter.cut[2])
        status = "stopped"
    else:
        status = "interrupted"
    return Outcome(status, epochs, reporter.last, reporter.start_epoch)


def finished(run_dir: Path, metric: str) -> Outcome:
    """The outcome of a trial that ended before (read back from its run directory)."""
    history = read_metrics(run_dir / RunDir.METRICS)
    status = "completed" if (run_dir / RunDir.RESULTS).exists() else "stopped"
    attempts = read_record(run_dir).get("attempts", [{}])
    measured = rows_with(history, metric)  # (--eval-every skips some epochs)
    return Outcome(status, len(history), row_value(measured[-1], metric) if measured else None,
                   int(attempts[-1].get("resumed_from_epoch", 0)))
