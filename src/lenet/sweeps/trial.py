"""One run of a sweep, wherever it runs (in-process, a pool worker, a Ray task): its status
on disk, training or resuming it, and the record of a failed attempt."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..base.atomic import write_text
from ..base.lock import RunLock
from ..run.console import Console
from ..run.directory import RunDir
from ..run.shortcuts import resume, train
from .spec import PlannedRun


def status(run: PlannedRun) -> str:
    """'done', 'interrupted' (has a checkpoint) or 'new'."""
    run_dir = Path(run.config.out_dir) / run.name
    if (run_dir / RunDir.RESULTS).exists():
        return "done"
    if (run_dir / "checkpoint.pt").exists():
        return "interrupted"
    return "new"


STOP_MARKER = ".stopping"  # in the sweep directory: queued runs must not start


def execute(run: PlannedRun, stop: Any = None) -> str:
    """Train (or resume) one planned run, logging to its directory; returns its status."""
    run_dir = Path(run.config.out_dir) / run.name
    state = status(run)
    if state == "done":
        return "done"
    if (Path(run.config.out_dir) / STOP_MARKER).exists():
        return "not started"
    if state == "new" and run_dir.exists():
        with RunLock(run_dir):  # refused if a process (an orphaned worker) still writes it
            shutil.rmtree(run_dir)  # a start that never reached its first checkpoint
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log:
        console = Console(progress=False, stream=log)
        if state == "interrupted":
            result = resume(run_dir, console=console, stop=stop)
        else:
            result = train(run.config, console=console, stop=stop)
    return "done" if result.completed else "interrupted"


FAILED = "failed.txt"  # in a run directory: why its last attempt failed


def record_result(run: PlannedRun, result: str) -> None:
    """A failed run's error in RUN/failed.txt (the next attempt clears it)."""
    file = Path(run.config.out_dir) / run.name / FAILED
    if result.startswith("failed"):
        file.parent.mkdir(parents=True, exist_ok=True)
        write_text(file, result.removeprefix("failed: ") + "\n")
    else:
        file.unlink(missing_ok=True)
