"""One-call shortcuts: `train(config)` and `resume(run_dir)`.

They are `Run.create(config).fit()` and `Run.open(run_dir, **overrides).fit()`
(record.py; a run's set-up, epochs, evaluation and finish live in fit.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training.config import TrainConfig
from .console import Console
from .fit import AUTOCAST, RunResult
from .record import Run
from .resume import RESUMABLE_OVERRIDES
from .stop import StopRequest

__all__ = ["AUTOCAST", "RESUMABLE_OVERRIDES", "RunResult", "StopRequest", "resume", "train"]


def train(config: TrainConfig, *, console: Console | None = None,
          stop: StopRequest | None = None) -> RunResult:
    """Train a model as `config` says, recording the run in a new directory."""
    return Run.create(config).fit(console=console, stop=stop)


def resume(run_dir: str | Path, *, console: Console | None = None,
           stop: StopRequest | None = None, **overrides: Any) -> RunResult:
    """Continue an interrupted run; `overrides` may change only RESUMABLE_OVERRIDES."""
    return Run.open(run_dir, **overrides).fit(console=console, stop=stop)
