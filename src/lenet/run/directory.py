"""The record a training run leaves: one directory per run.

    runs/<name>/
      config.json    resolved training and model configuration, environment
      metrics.csv    one row per epoch
      curves.png     the book's figure (train loss, train acc, test acc)
      checkpoint.pt  weights and training state, rewritten after each epoch
      results.json   final figures, written when the run ends
      .lock          held (flock) by the process writing the run (lenet/base/lock.py)
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from .. import __version__
from ..base.atomic import write_text
from ..base.lock import RunLock
from ..base.names import check_name
from ..errors import ConfigError
from ..training.checkpoint import FILENAME as CHECKPOINT

if TYPE_CHECKING:
    from ..training.loop import HistoryRow


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU as a figure needs it beside it: its name and, on x86, what tells apart chips
    that a virtual machine names alike ("AMD EPYC" is Zen 3 or Zen 4): the family and model
    numbers and the widest vectors, e.g. "AMD EPYC (family 25 model 17, AVX-512)". Results
    differ in their last bits between them (PyTorch's and lenet's kernels pick their code by
    the vector width), and so do records. `cpuinfo`: /proc/cpuinfo's text (read if None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    name = first.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    flags = set(first.get("flags", "").split())
    vectors = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                              ("sse4_2", "SSE4.2")) if flag in flags), None)
    details = [f"family {first['cpu family']} model {first['model']}"
               if "cpu family" in first and "model" in first else None, vectors]
    shown = ", ".join(d for d in details if d)
    return f"{name} ({shown})" if shown else name


def environment() -> dict[str, Any]:
    """Versions and machine facts that a figure needs beside it."""
    return {
        "lenet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


class RunDir:
    CONFIG, METRICS, CURVES, RESULTS = "config.json", "metrics.csv", "curves.png", "results.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)  # the writer holds it: RunDir.create, Run.fit

    @classmethod
    def create(cls, out_dir: str | Path, name: str | None, *, default_stem: str,
               lock: bool = True) -> RunDir:
        """A new run directory; a default name is made unique with a timestamp. With `lock`
        (the process that writes the run: rank 0 of several) its lock is taken first, so
        that of two runs started at once with one name, one is refused."""
        out_dir = Path(out_dir)
        if name is not None:
            check_name(name, "run name (--name)")
        if name is None:
            stem = f"{default_stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            name, n = stem, 1
            while (out_dir / name).exists():
                n += 1
                name = f"{stem}-{n}"
        path = out_dir / name
        if (path / CHECKPOINT).exists() or (path / cls.CONFIG).exists():
            raise ConfigError(f"{path} already holds a run: continue it with --resume {path}, "
                              "or choose another --name")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"cannot write the run directory {path}: {e.strerror or e}") from e
        run_dir = cls(path)
        if lock:
            run_dir.lock.acquire()
            # checked again under the lock: another process may have started it meanwhile
            if (path / CHECKPOINT).exists() or (path / cls.CONFIG).exists():
                run_dir.lock.release()
                raise ConfigError(f"{path} already holds a run: continue it with --resume "
                                  f"{path}, or choose another --name")
        return run_dir

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        write_text(self.file(name), json.dumps(data, indent=2, default=str) + "\n")
        return self.file(name)

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.file(name).read_text())

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> Path:
        """Rewrite metrics.csv from the full history (so a resumed run stays consistent).
        The columns are an evaluated epoch's: epochs that --eval-every skips leave the
        evaluation's cells empty."""
        buffer = io.StringIO()
        if history:
            columns: list[str] = []
            for row in history:  # an evaluated row has every key, in order
                columns = list(row) if len(row) > len(columns) else columns
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(history)
        write_text(self.file(self.METRICS), buffer.getvalue())
        return self.file(self.METRICS)


def read_metrics(path: str | Path) -> list[HistoryRow]:
    """The rows of a metrics.csv, numbers parsed; an empty cell (an epoch --eval-every
    skipped) is a key the row does not have, as in the run's history."""
    with open(path, newline="") as f:
        rows = [{k: float(v) if k != "epoch" else int(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]
    return cast("list[HistoryRow]", rows)  # the columns write_metrics wrote
