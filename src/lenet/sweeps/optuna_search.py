"""`lenet sweep FILE` for a [search] file on one machine: Optuna, its study in SQLite.

Why Optuna here rather than Ray Tune in local mode: no Ray to start (5-10 s and about 1 GB
of memory on a 2-core machine), one process, and the search's whole state is one ordinary
file, OUT/study.db, that sqlite3 or optuna-dashboard open and several workers could share.
The sampler (TPE or random) and the pruner (`SuccessiveHalvingPruner`: asynchronous
successive halving, ASHA, with `grace_period` as its minimum resource) are Optuna's own;
lenet writes no scheduler. Trials run one after another here, each with the CPU threads
lenet's training picks.

What survives what:
- A trial pruned by ASHA stops at the end of that epoch (a `StopRequest`: the run saves
  and returns) and its run directory says so (RUN/stopped.json, attempt.py).
- The driver killed (kill -9, a lost machine): each running trial's heartbeat in the
  database stops. Run the same command again: this process holds the sweep's lock, so a
  trial still RUNNING belongs to a dead driver; once its heartbeat is stale Optuna fails it
  and `RetryHeartbeatStaleTrialCallback` queues a retry with the same values, which opens the same
  run directory and resumes its checkpoint. Finished trials stay in the database and are not
  redone; TPE keeps no state but the trials in the database, so the search goes on as if
  never stopped.
- Ctrl-C: the running trial saves, is marked failed with `interrupted` set, and is queued
  again, with its values, on the next run.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from ..base.lock import RunLock
from ..errors import ConfigError, LenetError
from .attempt import budget_spent, run_trial
from .space import Search, suggest

HEARTBEAT_S = 2  # a running trial writes its heartbeat this often
GRACE_S = 6  # ... and is stale (its driver dead) after this long without one
INSTALL = "pip install 'lenet[search]'"


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"a [search] sweep needs Optuna, an optional extra: {INSTALL}") \
            from None
    # Optuna logs each trial at INFO on stderr; lenet's library code does not print.
    optuna.logging.set_verbosity(logging.WARNING)
    # heartbeats and retries are marked experimental (stable since Optuna 2.9): said once here
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def run_name(trial: Any) -> str:
    """The run directory of a trial: a retry's is the first attempt's, so it resumes it."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if "run" in trial.user_attrs:
        return str(trial.user_attrs["run"])
    history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return f"trial-{history[0] if history else trial.number:04d}"


def open_study(search: Search) -> tuple[Any, Any]:
    """(the study, its RDBStorage), made or reopened from OUT/study.db."""
    optuna = import_optuna()
    from optuna.storages import RDBStorage
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RETRY

    # A stale heartbeat means the driver died, not that the trial is bad: retried every
    # time (a bound would lose the trial of a search killed that many times).
    storage = RDBStorage(f"sqlite:///{search.out / 'study.db'}",
                         heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                         heartbeat_stale_trial_callback=RETRY(max_retry=None))
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return optuna.create_study(
        storage=storage, study_name=search.name, direction=search.direction,
        sampler=samplers[search.algorithm](seed=search.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=search.grace_period, reduction_factor=search.reduction_factor),
        load_if_exists=True), storage


def revive(study: Any, storage: Any, say: Callable[[str], None]) -> None:
    """Queue again the trials a dead or interrupted driver left: RUNNING ones once their
    heartbeat is stale (Optuna's retry callback), interrupted ones here."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RETRY
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    deadline = time.monotonic() + GRACE_S + 3 * HEARTBEAT_S
    while running := study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_stale_trials(study)
        if time.monotonic() > deadline:
            # killed before its first heartbeat: never stale. This process holds the
            # sweep's lock, so no live driver runs it: failed and retried here, alike.
            for trial in running:
                trial_id = storage.get_trial_id_from_study_id_trial_number(
                    storage.get_study_id_from_name(study.study_name), trial.number)
                if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    RETRY(max_retry=None)(study, storage.get_trial(trial_id))
        time.sleep(0.5)
    trials = study.get_trials(deepcopy=False)
    claimed = {run_name(t) for t in trials if t.state != TrialState.FAIL}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") \
                and run_name(t) not in claimed:
            study.enqueue_trial(t.params, user_attrs={"run": run_name(t)})
            claimed.add(run_name(t))
            say(f"{run_name(t)}: interrupted before, queued to resume")


def finished_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False,
                                states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_search_local(search: Search, say: Callable[[str], None]) -> bool:
    """Run the search until `search.trials` trials completed or were pruned, or its
    trial-epoch budget is spent; True when interrupted (Ctrl-C)."""
    optuna = import_optuna()
    search.out.mkdir(parents=True, exist_ok=True)
    with RunLock(search.out):  # one driver per study: a second is refused
        study, storage = open_study(search)
        revive(study, storage, say)
        say(f"search {search.name}: {search.algorithm} sampler, ASHA (grace "
            f"{search.grace_period}, reduction {search.reduction_factor}, max "
            f"{search.epochs} epochs), {finished_count(study)}/{search.trials} trials done, "
            + (f"budget {search.budget} trial-epochs, " if search.budget else "") +
            f"study in {search.out / 'study.db'}")

        def objective(trial: Any) -> float:
            name = run_name(study.get_trials(deepcopy=False)[trial.number])  # frozen: attrs
            trial.set_user_attr("run", name)
            values = suggest(trial, search)

            def report(epoch: int, value: float) -> str | None:
                trial.report(value, epoch)
                if why := budget_spent(search.out, search.budget):
                    return why
                if trial.should_prune():
                    return (f"pruned by Optuna's SuccessiveHalvingPruner (ASHA): "
                            f"{search.metric} not in the best 1/{search.reduction_factor} "
                            "of its rung")
                return None

            outcome = run_trial(
                search.config(name, values), values, search.metric, report,
                where={"optuna_trial": trial.number}, replay=True)
            say(f"[{finished_count(study) + 1}/{search.trials}] {name}: {outcome.status} "
                f"after {outcome.epochs} epoch(s), {search.metric} {outcome.value}"
                + (f" (resumed at epoch {outcome.resumed_from})" if outcome.resumed_from
                   else ""))
            if outcome.status == "interrupted":
                trial.set_user_attr("interrupted", True)
                raise KeyboardInterrupt
            if outcome.status == "stopped":
                raise optuna.TrialPruned()
            if outcome.value is None:
                raise LenetError(f"{name}: no epoch recorded")
            return outcome.value

        failures = 0
        try:
            while finished_count(study) < search.trials and failures < search.trials:
                if why := budget_spent(search.out, search.budget):
                    say(f"search {search.name}: {why}, after {finished_count(study)} trials")
                    break
                before = finished_count(study)
                # one trial a call: the count is checked before each start, so a rerun of a
                # finished search starts nothing (MaxTrialsCallback checks only after one)
                study.optimize(objective, n_trials=1, catch=(LenetError,))
                failures += finished_count(study) == before
        except KeyboardInterrupt:
            return True
    return False
