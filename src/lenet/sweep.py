"""Sweeps: many runs from one small TOML file, in parallel, resumable, compared at the end.

    name = "exercises"              # the sweep directory: OUT_DIR/NAME
    out_dir = "runs/sweeps"         # optional
    [base]                          # options every run shares: lenet train's, in TOML
    epochs = 10
    [grid]                          # every combination of these values
    "set.activation" = ["sigmoid", "relu"]   # set.KEY is a --set model option
    lr = [0.1, 0.9]
    [random]                        # optional: sample this many grid points instead
    samples = 4
    seed = 0
    [[runs]]                        # optional: extra runs, each with its own options
    name = "wide"
    "set.channels" = "16,32"

Each run gets its own run directory, named from the options it varies.
Finished runs (with results.json) are never redone, interrupted ones resume
from their checkpoint, so rerunning the same command after a Ctrl-C or a
crash completes the sweep. Runs go to worker processes, one CPU thread each by
default, as many as the cores and memory allow (lenet/sweep_pool.py), or, with
`--ray`, to Ray tasks (lenet/sweep_ray.py).
"""

from __future__ import annotations

import itertools
import math
import random
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .atomic import write_text
from .compare import (
    RunSummary,
    markdown_table,
    plot_curves,
    plot_tradeoffs,
    sort_by_accuracy,
    summarize_run,
    to_json,
    write_csv,
)
from .config import TrainConfig
from .errors import ConfigError
from .lock import RunLock
from .model_settings import ModelSettings
from .names import check_name
from .rundir import RunDir


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: TrainConfig


def _options(table: dict[str, Any], where: str) -> dict[str, Any]:
    """TOML options -> TrainConfig keyword arguments (set.KEY -> model_settings)."""
    known = {f.name for f in fields(TrainConfig)} - {"name", "out_dir", "model_settings"}
    options: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key.startswith("set."):
            settings[key[4:]] = value  # typed by TOML ([16, 32], true) or text ("16,32")
        elif key.replace("-", "_") in known:
            options[key.replace("-", "_")] = tuple(value) if isinstance(value, list) else value
        else:
            raise ConfigError(f"{where}: unknown option {key!r}")
    if settings:
        try:
            options["model_settings"] = ModelSettings.from_dict(settings)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return options


def _merge(*option_sets: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for options in option_sets:
        settings = merged.get("model_settings", ModelSettings()).updated(
            options.get("model_settings", ModelSettings()))
        merged.update(options, model_settings=settings)
    return merged


def _run_name(varying: dict[str, Any]) -> str:
    parts = [f"{k.removeprefix('set.')}={','.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in varying.items()]
    return re.sub(r"[^A-Za-z0-9=.,+-]+", "_", "_".join(parts)) or "run"


MAX_RUNS = 10_000  # grid combinations: more is a mistake (and a list too large to build)


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: Any) -> Any:
    """`table[key]` (or `default`), refused unless of `kind` (a bool is no int here)."""
    value = table.get(key, default)
    if value is not default and (not isinstance(value, kind) or (
            kind is int and isinstance(value, bool))):
        what = {str: "text", int: "a whole number", dict: "a table", list: "a list"}[kind]
        raise ConfigError(f"{where}: {key} must be {what}, got {value!r:.60}")
    return value


def load_spec(path: str | Path) -> tuple[str, Path, list[PlannedRun]]:
    """(sweep name, sweep directory, planned runs) from a sweep file."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sweep file ({e.strerror or e})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    name = check_name(_typed(spec, "name", str, path.stem, path), f"{path}: the sweep name")
    out = Path(_typed(spec, "out_dir", str, "runs/sweeps", path)) / name
    base = _options(_typed(spec, "base", dict, {}, path), f"{path} [base]")
    grid = _typed(spec, "grid", dict, {}, path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path} [grid]: {key} must be a non-empty list of values")
    if math.prod(len(v) for v in grid.values()) > MAX_RUNS:
        raise ConfigError(f"{path} [grid]: more than {MAX_RUNS:,} combinations; sample them "
                          "with [random]")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if "random" in spec:
        sampling = _typed(spec, "random", dict, {}, path)
        samples, seed = (_typed(sampling, k, int, d, f"{path} [random]")
                         for k, d in (("samples", None), ("seed", 0)))
        if samples is None or samples < 1:
            raise ConfigError(f"{path} [random]: samples must be a whole number >= 1")
        points = random.Random(seed).sample(points, min(samples, len(points)))
    planned = []
    for point in points if grid else []:
        options = _merge(base, _options(point, f"{path} [grid]"))
        planned.append((_run_name({k: v for k, v in point.items() if len(grid[k]) > 1}), options))
    extras = _typed(spec, "runs", list, [], path)
    if not all(isinstance(extra, dict) for extra in extras):
        raise ConfigError(f"{path}: runs must be tables: [[runs]]")
    for i, extra in enumerate(extras):
        extra = dict(extra)
        run_name = check_name(_typed(extra, "name", str, f"run{i + 1}", f"{path} [[runs]]"),
                              f"{path} [[runs]] name")
        extra.pop("name", None)
        planned.append((run_name, _merge(base, _options(extra, f"{path} [[runs]] {run_name}"))))
    if not planned:
        raise ConfigError(f"{path}: no runs: give a [grid] or [[runs]]")
    names = [n for n, _ in planned]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two runs would share a name; name the [[runs]] apart")
    runs = [PlannedRun(n, TrainConfig(**{**o, "out_dir": str(out), "name": n}))
            for n, o in planned]
    return name, out, runs


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
    from . import runner
    from .console import Console

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
            result = runner.resume(run_dir, console=console, stop=stop)
        else:
            result = runner.train(run.config, console=console, stop=stop)
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


def run_sweep(path: str | Path, *, workers: int | None = None,
              say: Callable[[str], None] = print, stop: Any = None,
              ray: str | None = None) -> list[RunSummary]:
    """Run every unfinished run of a sweep file, then compare them all.

    `workers=0` runs in this process, one after another (`stop` then applies). `ray`
    runs them as Ray tasks instead (lenet/sweep_ray.py): on the cluster at that address,
    "auto", or "local" for a Ray started here.
    """
    name, out, runs = load_spec(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / STOP_MARKER).unlink(missing_ok=True)
    shutil.copyfile(path, out / "sweep.toml")
    pending = [r for r in runs if status(r) != "done"]
    say(f"sweep {name}: {len(runs)} runs, {len(runs) - len(pending)} already done, in {out}")
    interrupted = False
    if pending and workers == 0:
        for i, run in enumerate(pending, 1):
            result = execute(run, stop)
            say(f"[{i}/{len(pending)}] {run.name}: {result}")
            if result != "done":
                interrupted = True
                break
    elif pending and ray is not None:
        from .sweep_ray import run_on_ray  # Ray: an optional extra

        interrupted = run_on_ray(pending, ray, Path(path), out / STOP_MARKER, say)
    elif pending:
        from .sweep_pool import run_in_pool

        interrupted = run_in_pool(pending, workers, out / STOP_MARKER, say)
    summaries = [summarize_run(Path(r.config.out_dir) / r.name) for r in runs
                 if (Path(r.config.out_dir) / r.name / RunDir.METRICS).exists()]
    if interrupted:
        say(f"sweep interrupted; run the same command again to finish it: lenet sweep {path}")
    if summaries:
        report(summaries, out, name, say)
    return sort_by_accuracy(summaries)


def report(summaries: list[RunSummary], out: Path, title: str,
           say: Callable[[str], None] = print) -> None:
    ranked = sort_by_accuracy(summaries)
    table = markdown_table(ranked)
    write_text(out / "comparison.md", table + "\n")
    write_csv(ranked, out / "comparison.csv")
    write_text(out / "comparison.json", to_json(ranked) + "\n")
    plot_tradeoffs(ranked, out / "tradeoffs.png", title=f"sweep {title}")
    plot_curves([s.path for s in ranked], out / "curves.png", title=f"sweep {title}")
    say(table)
    say(f"written: {out / 'comparison.md'}, comparison.csv, tradeoffs.png, curves.png")

