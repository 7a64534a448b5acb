"""[search] sweeps (lenet/sweeps/space.py) on one machine: Optuna, its study in SQLite
(optuna_search.py). The file format and its refusals; a small search with ranges and ASHA
whose poor trials stop early and say so; a rerun that starts nothing; the driver killed with
SIGKILL mid-trial and run again: the same number of trials, none redone, the killed one
resumed from its checkpoint. The cluster's tests: test_search_ray.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require, write_dataset

from lenet.errors import ConfigError
from lenet.run.directory import read_metrics
from lenet.sweeps.attempt import SEARCH_JSON, STOPPED
from lenet.sweeps.space import is_search, load_search, suggest
from lenet.sweeps.spec import load_spec
from lenet.sweeps.sweep import run_sweep

optuna = require("optuna")

ENV = {**os.environ, "LENET_NATIVE": "1"}


def search_file(tmp_path: Path, data: Path | str = "fashion-mnist", *, trials: int = 4,
                epochs: int = 3, extra: str = "", name: str = "s") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
out_dir = "{tmp_path / 'out'}"
[base]
dataset = "{data}"
epochs = {epochs}
batch_size = 32
momentum = 0.9
val_split = 0.2
[search]
algorithm = "random"
trials = {trials}
seed = 3
grace_period = 1
reduction_factor = 2
[space]
lr = {{ log-uniform = [0.0001, 0.2] }}
"set.activation" = {{ choice = ["relu", "sigmoid"] }}
"set.dropout" = {{ uniform = [0.0, 0.3], when = {{ "set.activation" = "relu" }} }}
{extra}""")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    write_dataset(directory, n_train=400, n_test=100)
    return directory


def test_a_search_file_gives_ranges_choices_and_conditionals(tmp_path):
    search = load_search(search_file(tmp_path))
    assert (search.algorithm, search.trials, search.metric, search.direction) == \
        ("random", 4, "val_acc", "maximize")
    assert [(p.key, p.kind) for p in search.params] == [
        ("lr", "log-uniform"), ("set.activation", "choice"), ("set.dropout", "uniform")]
    relu = suggest(optuna.trial.FixedTrial(
        {"lr": 0.01, "set.activation": "relu", "set.dropout": 0.1}), search)
    sigmoid = suggest(optuna.trial.FixedTrial({"lr": 0.01, "set.activation": "sigmoid"}),
                      search)
    assert relu == {"lr": 0.01, "set.activation": "relu", "set.dropout": 0.1}
    assert sigmoid == {"lr": 0.01, "set.activation": "sigmoid"}  # dropout not sampled
    config = search.config("trial-0000", relu)
    assert (config.lr, config.model_settings.dropout, config.val_split) == (0.01, 0.1, 0.2)
    assert config.epochs == 3 and config.out_dir == str(tmp_path / "out" / "s")


def test_a_bundle_is_one_named_choice_of_several_options(tmp_path):
    search = load_search(search_file(tmp_path, extra="""
[[space.arch.bundle]]
name = "wide"
"set.channels" = "16,32"
"set.kernel" = 5
[[space.arch.bundle]]
name = "deep"
"set.channels" = "8,16,32"
"set.kernel" = 3
"""))
    assert search.params[-1].kind == "bundle"
    values = suggest(optuna.trial.FixedTrial({"lr": 0.01, "set.activation": "sigmoid",
                                              "arch": "deep"}), search)
    assert values["arch"] == "deep"  # recorded by name
    settings = search.config("t", values).model_settings
    assert (settings.channels, settings.kernel_sizes) == ((8, 16, 32), (3,))


@pytest.mark.parametrize(("change", "message"), [
    (("val_split = 0.2\n", ""), "give val_split"),
    (('seed = 3\n', 'seed = 3\nmetric = "test_acc"\n'), "never chooses"),
    (('algorithm = "random"', 'algorithm = "grid"'), "algorithm must be one of"),
    (("[0.0001, 0.2]", "[0.2, 0.0001]"), "low < high"),
    (("log-uniform = [0.0001", "log-uniform = [0.0"), "low > 0"),
    (('"set.activation" = "relu"', '"set.kernel" = 3'), "depends on set.kernel"),
    (("grace_period = 1", "grace_period = 9"), "exceeds [base] epochs"),
    (("lr = {", "nonsense = {"), "unknown option 'nonsense'"),
    (("grace_period = 1", "grace_period = 2\nbudget = 1"), "budget"),
    (("grace_period = 1", "grace_period = 1\nbudget = 0"), "budget"),
    (("lr = { log-uniform", "lr = { bundle = [1, 2], x"), "needs exactly one"),
    (("lr = { log-uniform = [0.0001, 0.2] }", "lr = { bundle = [{ lr = 0.1 }] }"),
     "each with its own name"),
])
def test_a_bad_search_file_is_refused_with_the_reason(tmp_path, change, message):
    path = search_file(tmp_path)
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_search(path)


def test_every_sweep_file_of_the_project_still_loads():
    for path in sorted(Path("sweeps").glob("*.toml")):
        if is_search(path):
            assert load_search(path).name == path.stem
        else:
            name, _, runs = load_spec(path)
            assert runs and name == path.stem


def records(out: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / SEARCH_JSON).read_text())
            for d in sorted(out.glob("trial-*"))}


def ended_once(out: Path, epochs: int) -> None:
    """Every trial completed (results.json) or was stopped (stopped.json), never both; its
    metrics have each epoch once, in order."""
    for run in sorted(out.glob("trial-*")):
        done, stopped = (run / "results.json").exists(), (run / STOPPED).exists()
        assert done != stopped, run.name
        rows = [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")]
        assert rows == list(range(1, len(rows) + 1)), run.name
        assert len(rows) == epochs if done else len(rows) < epochs


@pytest.mark.slow
def test_a_local_search_stops_poor_trials_and_a_rerun_starts_nothing(data, tmp_path):
    lines: list[str] = []
    ranked = run_sweep(search_file(tmp_path, data), say=lines.append)
    out = tmp_path / "out" / "s"
    assert (out / "study.db").stat().st_size > 0  # the study: a real SQLite file
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "PRUNED" in states and "COMPLETE" in states
    ended_once(out, 3)
    stopped = [r for r in ranked if r.stopped]
    assert len(stopped) == states.count("PRUNED")
    record = json.loads((Path(stopped[0].path) / STOPPED).read_text())
    assert record["epoch"] < 3 and "SuccessiveHalvingPruner" in record["reason"]
    table = (out / "comparison.md").read_text()
    assert table.count("(stopped early)") == len(stopped)
    assert (out / "curves.png").is_file() and (out / "tradeoffs.png").is_file()
    # the values each trial trained with are its study's
    for trial in study.trials:
        assert records(out)[trial.user_attrs["run"]]["values"] == trial.params
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("trial-*/metrics.csv")}
    lines.clear()
    run_sweep(search_file(tmp_path, data), say=lines.append)
    assert "4/4 trials done" in lines[0] and not any(line.startswith("[") for line in lines)
    assert {p: p.stat().st_mtime_ns for p in out.glob("trial-*/metrics.csv")} == mtimes


@pytest.mark.slow
def test_a_search_with_a_budget_trains_no_more_epochs_than_it(data, tmp_path):
    # 6 trials of up to 3 epochs could train 18 epochs; the budget allows 7
    path = search_file(tmp_path, data, trials=6, extra="", name="b")
    path.write_text(path.read_text().replace("grace_period = 1", "grace_period = 1\nbudget = 7"))
    lines: list[str] = []
    ranked = run_sweep(path, say=lines.append)
    out = tmp_path / "out" / "b"
    assert sum(len(read_metrics(f)) for f in out.glob("trial-*/metrics.csv")) == 7
    assert any("budget of 7 trial-epochs is spent" in line for line in lines)
    assert len(ranked) < 6  # the budget ended the search, not the trial count
    ended_once(out, 3)
    last = max(out.glob("trial-*"), key=lambda d: d.name)
    if not (last / "results.json").exists():  # cut by the budget, not by ASHA
        assert "budget" in json.loads((last / STOPPED).read_text())["reason"]
    lines.clear()
    run_sweep(path, say=lines.append)  # a rerun: the budget is spent, nothing starts
    assert not any(line.startswith("[") for line in lines)
    assert sum(len(read_metrics(f)) for f in out.glob("trial-*/metrics.csv")) == 7


@pytest.mark.slow
def test_a_local_search_whose_driver_is_killed_goes_on_where_it_stopped(data, tmp_path):
    # Longer trials (more steps an epoch) so that the kill lands inside one.
    spec = search_file(tmp_path, data, trials=3, epochs=3,
                       extra="", name="k").read_text().replace("batch_size = 32",
                                                                "batch_size = 8")
    path = tmp_path / "k.toml"
    path.write_text(spec)
    out = tmp_path / "out" / "k"
    command = [sys.executable, "-m", "lenet", "sweep", str(path)]
    driver = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and driver.poll() is None:
            for run in out.glob("trial-*"):  # a trial past its first epoch, unfinished
                if (run / "metrics.csv").exists() and not (run / "results.json").exists() \
                        and not (run / STOPPED).exists() \
                        and len(read_metrics(run / "metrics.csv")) >= 1:
                    victim = run.name
                    break
            time.sleep(0.05)
        assert victim is not None, "no trial was caught mid-run"
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {d.name for d in out.glob("trial-*")}
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trial-*/results.json")}
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{out / 'study.db'}")
    ended = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ended) == 3  # the same number of trials
    assert {d.name for d in out.glob("trial-*")} >= before
    assert len(list(out.glob("trial-*"))) == 3  # the killed trial's run reused, not a new one
    ended_once(out, 3)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # none redone
    attempts = records(out)[victim]["attempts"]
    assert len(attempts) == 2 and attempts[-1]["resumed_from_epoch"] >= 1
    assert [t.state.name for t in study.trials].count("FAIL") == 1  # the stale one, retried


@pytest.mark.slow
def test_a_trial_left_running_without_a_heartbeat_is_retried(data, tmp_path):
    # A driver killed between starting a trial and its first heartbeat leaves a RUNNING
    # trial that never turns stale: the next driver (holding the sweep's lock) retries it.
    from lenet.sweeps.optuna_search import open_study

    path = search_file(tmp_path, data, trials=1, epochs=2, name="h")
    search = load_search(path)
    search.out.mkdir(parents=True)
    study, _ = open_study(search)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna: heartbeats are optimize's
        orphan = study.ask()  # RUNNING, and no heartbeat ever
    orphan.set_user_attr("run", "trial-0000")
    values = suggest(orphan, search)
    run_sweep(path, say=lambda line: None)
    trials = optuna.load_study(study_name="h", storage=f"sqlite:///{search.out / 'study.db'}")
    states = {t.number: t.state.name for t in trials.trials}
    assert states[0] == "FAIL" and "RUNNING" not in states.values()
    retry = next(t for t in trials.trials if t.number > 0 and t.user_attrs["run"] == "trial-0000")
    assert retry.params == values and retry.state.name in ("COMPLETE", "PRUNED")
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 1  # that one only


def test_a_trial_reports_only_the_epochs_it_evaluated():
    """With --eval-every, the scheduler hears of evaluated epochs only; the others have no
    metric to judge a trial by."""
    from lenet.run.events import EpochEnd
    from lenet.run.stop import StopRequest
    from lenet.sweeps.attempt import Reporter

    heard: list[tuple[int, float]] = []
    reporter = Reporter("val_acc", lambda epoch, value: heard.append((epoch, value)) or None,
                        StopRequest(), {}, replay=False)
    rows = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.9, "val_acc": 0.5},
            {"epoch": 3, "train_loss": 0.8}]
    for row in rows:
        reporter.on_epoch(EpochEnd(row, rows, lambda: {}, "val", None))
    assert heard == [(2, 0.5)] and reporter.last == 0.5
