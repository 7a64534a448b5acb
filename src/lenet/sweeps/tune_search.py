"""`lenet sweep FILE --ray [ADDRESS]` for a [search] file: Ray Tune on a cluster.

Nothing here schedules or samples: Ray Tune's `ASHAScheduler` (asynchronous successive
halving on the `epoch` each trial reports) stops poor trials, `OptunaSearch` samples the
[space] with Optuna's TPE or random sampler (the same sampling code as on one machine,
space.suggest), `FailureConfig` retries a trial whose worker or node died, and
`Tuner.restore` continues a search whose driver died. lenet adds the trial's body:

- A trial is `attempt.run_trial`: lenet's own run in OUT/trial-<tune trial id>, one epoch
  at a time; after each epoch (checkpoint and metrics written) it reports the metric to Tune
  with a Tune checkpoint that names the run. Tune's `report` waits for the driver, so a trial
  ASHA stops trains no further epoch; the driver's callback then writes RUN/stopped.json.
- A worker or node lost: Tune restarts the trial (on any node with a free CPU) from its
  latest Tune checkpoint; the trial opens the same run directory and lenet resumes it from
  its own last checkpoint. RUN/search.json lists each attempt, the epoch it resumed from
  and its node.
- The driver killed: the trials' actors die with it. Run the same command again:
  `Tuner.can_restore(OUT/tune)` holds, so `Tuner.restore` reloads the experiment (finished
  trials, the searcher's Optuna study, the scheduler) and restarts the unfinished trials
  from their checkpoints. Finished trials are never run again.

The sweep folder must be on storage every node sees (here: one machine, or a shared file
system): it is Tune's `storage_path` too. Relative paths in the file are the driver's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ray import tune

from ..errors import ConfigError
from ..run.directory import RunDir, read_metrics
from ..training.loop import row_value, rows_with
from .attempt import STOPPED, budget_spent, mark_stopped, run_trial
from .on_ray import connect, import_ray, resources
from .optuna_search import import_optuna
from .space import Search, suggest

EXPERIMENT = "tune"  # OUT/tune: Tune's experiment state, trial records and checkpoints
MAX_FAILURES = 3  # attempts per trial after the first (a lost worker or node)


def run_name(trial_id: str) -> str:
    return f"trial-{trial_id}"


class DefineByRun:
    """The [space] for OptunaSearch: a picklable callable (Tune saves the searcher with it)."""

    def __init__(self, search: Search) -> None:
        self.search = search

    def __call__(self, trial: Any) -> None:
        suggest(trial, self.search)


def trainable(values: dict[str, Any], search: Search, cwd: str, threads: int) -> None:
    """One trial in a Ray worker: train or resume its run, reporting each epoch to Tune."""
    import ray
    import torch

    os.chdir(cwd)  # Tune starts trials in their own folder; the file's paths are the driver's
    torch.set_num_threads(threads)
    context = tune.get_context()
    name = run_name(context.get_trial_id())
    values = {k: values[k] for k in values if not k.startswith("_")}

    last: list[tuple[int, float]] = []

    def report(epoch: int, value: float) -> str | None:
        if epoch >= search.epochs:  # told after the run finishes: Tune ends a trial at max_t
            last.append((epoch, value))  # while `report` waits, before results.json
            return None
        tell(epoch, value)
        return None  # ASHA (or the budget) stops a trial by ending it while `report` waits

    def tell(epoch: int, value: float) -> None:
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "lenet.json").write_text(json.dumps({"run": name, "epoch": epoch}))
            tune.report({search.metric: value, "epoch": epoch},
                        checkpoint=tune.Checkpoint.from_directory(folder))

    where = {"node": ray.get_runtime_context().get_node_id()[:12], "pid": os.getpid(),
             "tune_trial": context.get_trial_id(),
             "tune_checkpoint": tune.get_checkpoint() is not None}
    outcome = run_trial(search.config(name, values), values, search.metric, report, where=where)
    if outcome.status == "interrupted":
        raise ConfigError(f"{name}: interrupted")  # Tune records it; a restore retries it
    if last or outcome.status == "completed":  # (a retry of a run that had finished: its end)
        tell(*(last[-1] if last else (outcome.epochs, outcome.value or 0.0)))


class MarkStopped(tune.Callback):
    """A Tune callback on the driver: a trial that ended before its last epoch without an
    error was stopped by ASHA; say so in its run directory at once (a driver killed later
    loses nothing)."""

    def __init__(self, search: Search) -> None:
        self.search = search

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        result = trial.last_result or {}
        epoch = int(result.get("epoch", 0))
        run_dir = self.search.out / run_name(trial.trial_id)
        if 0 < epoch < self.search.epochs and run_dir.is_dir():
            why = budget_spent(self.search.out, self.search.budget) or (
                f"stopped by Ray Tune's ASHAScheduler: {self.search.metric} not in the best "
                f"1/{self.search.reduction_factor} of its rung")
            mark_stopped(run_dir, epoch, self.search.metric, result.get(self.search.metric), why)


class Budget(tune.Stopper):
    """Ends the whole search once its trials together trained `budget` epochs (counted in
    their run directories, so a restored driver counts what the killed one trained)."""

    def __init__(self, search: Search) -> None:
        self.search = search

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return budget_spent(self.search.out, self.search.budget) is not None


def tuner(search: Search, spec: Path) -> Any:
    """A new Tuner for the search, or the one its killed driver left (Tuner.restore)."""
    from optuna.samplers import RandomSampler, TPESampler
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    cpus, gpus = resources(spec)
    body = tune.with_resources(
        tune.with_parameters(trainable, search=search, cwd=os.getcwd(),
                             threads=max(1, int(cpus))),
        {"cpu": cpus, "gpu": gpus})
    experiment = search.out / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        return tune.Tuner.restore(str(experiment), trainable=body, resume_unfinished=True,
                                  resume_errored=True)
    mode = "max" if search.direction == "maximize" else "min"
    sampler = {"tpe": TPESampler, "random": RandomSampler}[search.algorithm](seed=search.seed)
    return tune.Tuner(
        body,
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=mode, num_samples=search.trials,
            search_alg=OptunaSearch(space=DefineByRun(search), metric=search.metric, mode=mode,
                                    sampler=sampler),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=search.epochs,
                                    grace_period=search.grace_period,
                                    reduction_factor=search.reduction_factor)),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(search.out), verbose=0,
            callbacks=[MarkStopped(search)], stop=Budget(search),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


def mark_cut_by_budget(search: Search, why: str,
                       failed: Collection[str] = frozenset()) -> None:
    """Say in every trial's run directory that neither finished nor was stopped by ASHA that
    the budget ended it: the Budget stopper ends the whole search and Tune calls no callback
    for the trials it ends, some of which (running beside the one that spent the budget) may
    not have reported an epoch yet. `failed`: run names of trials Tune saw fail (their
    error is theirs to tell, not the budget)."""
    for run_dir in sorted(search.out.glob("trial-*")):
        if (not run_dir.is_dir() or run_dir.name in failed
                or (run_dir / RunDir.RESULTS).exists() or (run_dir / STOPPED).exists()):
            continue
        metrics = run_dir / RunDir.METRICS
        rows = read_metrics(metrics) if metrics.exists() else []
        evaluated = rows_with(rows, search.metric)
        mark_stopped(run_dir, len(rows), search.metric,
                     row_value(evaluated[-1], search.metric) if evaluated else None, why)


def run_search_on_ray(search: Search, address: str, spec: Path,
                      say: Callable[[str], None]) -> bool:
    """Run (or continue) the search with Ray Tune; True when it ended unfinished."""
    ray = import_ray()
    search = dataclasses.replace(search, out=search.out.resolve())  # the workers' cwd differs
    import_optuna()  # quiet: Optuna's INFO lines
    # Tune's console output: its older engine, silent at verbose=0 (lenet's library does not
    # print); forced experiment snapshots are wanted here (a killed driver loses less)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = connect(ray, address)
    try:
        restoring = (search.out / EXPERIMENT).is_dir()
        say(f"search {search.name} on Ray Tune: {search.algorithm} (OptunaSearch), ASHA (grace "
            f"{search.grace_period}, reduction {search.reduction_factor}, max {search.epochs} "
            f"epochs), {search.trials} trials"
            + (f", budget {search.budget} trial-epochs" if search.budget else "")
            + (", continuing" if restoring else ""))
        grid = tuner(search, spec).fit()
    finally:
        if started:
            ray.shutdown()
    ended = 0
    spent = budget_spent(search.out, search.budget)
    if spent:
        failed = {run_name(result.metrics["trial_id"]) for result in grid
                  if result.error and "trial_id" in (result.metrics or {})}
        mark_cut_by_budget(search, spent, failed)
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id", "?")
        epoch = (result.metrics or {}).get("epoch")
        state = "error: " + str(result.error).strip().splitlines()[-1] if result.error else \
            f"{epoch} epoch(s), {search.metric} {(result.metrics or {}).get(search.metric)}"
        ended += result.error is None
        say(f"{run_name(trial_id)}: {state}")
    if spent:
        say(f"search {search.name}: {spent}")
        return False
    return ended < search.trials
