"""A sweep as a whole: its pending runs on the chosen backend (this process, a pool of
workers, Ray), then the comparison of every run. The file format: spec.py. A [search]
(space.py) goes to Optuna here (optuna_search.py) or Ray Tune (tune_search.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..base.atomic import write_text
from ..errors import ConfigError
from ..run.directory import RunDir
from .compare import (
    RunSummary,
    markdown_table,
    plot_compared_curves,
    plot_tradeoffs,
    sort_by_accuracy,
    summarize_run,
    to_json,
    write_csv,
)
from .space import is_search, load_search
from .spec import load_spec
from .trial import STOP_MARKER, execute, status


def run_sweep(path: str | Path, *, workers: int | None = None,
              say: Callable[[str], None] = print, stop: Any = None,
              ray: str | None = None) -> list[RunSummary]:
    """Run every unfinished run of a sweep file, then compare them all.

    `workers=0` runs in this process, one after another (`stop` then applies). `ray`
    runs them as Ray tasks instead (on_ray.py): on the cluster at that address,
    "auto", or "local" for a Ray started here.
    """
    if is_search(path):
        if workers not in (None, 1):
            raise ConfigError("--workers is for grids: a [search] on this machine trains one "
                              "trial at a time (use --ray for many)")
        return run_search(path, say=say, ray=ray)
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
        from .on_ray import run_on_ray  # Ray: an optional extra

        interrupted = run_on_ray(pending, ray, Path(path), out / STOP_MARKER, say)
    elif pending:
        from .pool import run_in_pool

        interrupted = run_in_pool(pending, workers, out / STOP_MARKER, say)
    summaries = [summarize_run(Path(r.config.out_dir) / r.name) for r in runs
                 if (Path(r.config.out_dir) / r.name / RunDir.METRICS).exists()]
    if interrupted:
        say(f"sweep interrupted; run the same command again to finish it: lenet sweep {path}")
    if summaries:
        report(summaries, out, name, say)
    return sort_by_accuracy(summaries)


def run_search(path: str | Path, *, say: Callable[[str], None] = print,
               ray: str | None = None) -> list[RunSummary]:
    """A [search] sweep (space.py): Optuna on this machine, Ray Tune with `ray`; then the
    comparison of every trial, those stopped early marked as such."""
    search = load_search(path)
    search.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, search.out / "sweep.toml")
    if ray is not None:
        from .tune_search import run_search_on_ray  # Ray Tune: an optional extra

        interrupted = run_search_on_ray(search, ray, Path(path), say)
    else:
        from .optuna_search import run_search_local  # Optuna: an optional extra

        interrupted = run_search_local(search, say)
    summaries = [summarize_run(d) for d in sorted(search.out.glob("trial-*"))
                 if (d / RunDir.METRICS).exists()]
    if interrupted:
        say(f"search interrupted; run the same command again to go on: lenet sweep {path}")
    if summaries:
        report(summaries, search.out, search.name, say)
    return sort_by_accuracy(summaries)


def report(summaries: list[RunSummary], out: Path, title: str,
           say: Callable[[str], None] = print) -> None:
    ranked = sort_by_accuracy(summaries)
    table = markdown_table(ranked)
    write_text(out / "comparison.md", table + "\n")
    write_csv(ranked, out / "comparison.csv")
    write_text(out / "comparison.json", to_json(ranked) + "\n")
    plot_tradeoffs(ranked, out / "tradeoffs.png", title=f"sweep {title}")
    plot_compared_curves([s.path for s in ranked], out / "curves.png", title=f"sweep {title}")
    say(table)
    say(f"written: {out / 'comparison.md'}, comparison.csv, tradeoffs.png, curves.png")

