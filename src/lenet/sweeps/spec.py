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
default, as many as the cores and memory allow (pool.py), or, with `--ray`, to
Ray tasks (on_ray.py); trial.py is one run's life, sweep.py the whole. A file with a
[search] table instead of a [grid] samples ranges and stops poor trials early: space.py.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..base.names import check_name
from ..errors import ConfigError
from ..models.settings import ModelSettings
from ..training.config import TrainConfig


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: TrainConfig


def parse_options(table: dict[str, Any], where: str) -> dict[str, Any]:
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


def merge_options(*option_sets: dict[str, Any]) -> dict[str, Any]:
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


def typed(table: dict[str, Any], key: str, kind: type, default: Any, where: Any) -> Any:
    """`table[key]` (or `default`), refused unless of `kind` (a bool is no int here)."""
    value = table.get(key, default)
    if value is not default and (not isinstance(value, kind) or (
            kind is int and isinstance(value, bool))):
        what = {str: "text", int: "a whole number", dict: "a table", list: "a list"}[kind]
        raise ConfigError(f"{where}: {key} must be {what}, got {value!r:.60}")
    return value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sweep file ({e.strerror or e})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def header(spec: dict[str, Any], path: Path) -> tuple[str, Path, dict[str, Any]]:
    """(sweep name, sweep directory, [base] as TrainConfig keyword arguments): what a grid
    and a search (space.py) share."""
    name = check_name(typed(spec, "name", str, path.stem, path), f"{path}: the sweep name")
    out = Path(typed(spec, "out_dir", str, "runs/sweeps", path)) / name
    return name, out, parse_options(typed(spec, "base", dict, {}, path), f"{path} [base]")


def load_spec(path: str | Path) -> tuple[str, Path, list[PlannedRun]]:
    """(sweep name, sweep directory, planned runs) from a sweep file."""
    path = Path(path)
    spec = read_toml(path)
    if "search" in spec:
        raise ConfigError(f"{path}: a [search] sweep has no planned runs (space.py plans it)")
    name, out, base = header(spec, path)
    grid = typed(spec, "grid", dict, {}, path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path} [grid]: {key} must be a non-empty list of values")
    if math.prod(len(v) for v in grid.values()) > MAX_RUNS:
        raise ConfigError(f"{path} [grid]: more than {MAX_RUNS:,} combinations; sample them "
                          "with [random]")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if "random" in spec:
        sampling = typed(spec, "random", dict, {}, path)
        samples, seed = (typed(sampling, k, int, d, f"{path} [random]")
                         for k, d in (("samples", None), ("seed", 0)))
        if samples is None or samples < 1:
            raise ConfigError(f"{path} [random]: samples must be a whole number >= 1")
        points = random.Random(seed).sample(points, min(samples, len(points)))
    planned = []
    for point in points if grid else []:
        options = merge_options(base, parse_options(point, f"{path} [grid]"))
        planned.append((_run_name({k: v for k, v in point.items() if len(grid[k]) > 1}), options))
    extras = typed(spec, "runs", list, [], path)
    if not all(isinstance(extra, dict) for extra in extras):
        raise ConfigError(f"{path}: runs must be tables: [[runs]]")
    for i, extra in enumerate(extras):
        extra = dict(extra)
        run_name = check_name(typed(extra, "name", str, f"run{i + 1}", f"{path} [[runs]]"),
                              f"{path} [[runs]] name")
        extra.pop("name", None)
        options = parse_options(extra, f"{path} [[runs]] {run_name}")
        planned.append((run_name, merge_options(base, options)))
    if not planned:
        raise ConfigError(f"{path}: no runs: give a [grid] or [[runs]]")
    names = [n for n, _ in planned]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two runs would share a name; name the [[runs]] apart")
    runs = [PlannedRun(n, TrainConfig(**{**o, "out_dir": str(out), "name": n}))
            for n, o in planned]
    return name, out, runs
