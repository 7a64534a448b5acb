"""[search] sweeps on a real two-node Ray cluster on 127.0.0.1 (lenet/sweeps/tune_search.py):
`ray start --head` and a second `ray start --address`, each its own process tree. A node
killed (SIGKILL, its whole tree) while a trial trains on it: that trial resumes from its
checkpoint on the other node and every trial ends exactly once. The driver killed mid-search
and run again: the same number of trials, none redone, the interrupted one resumed. A
search with a budget of trial-epochs ends when it is spent.

Every process the tests start is killed with SIGKILL by pid at the end, even on failure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require, write_dataset

from lenet.run.directory import read_metrics
from lenet.sweeps.attempt import SEARCH_JSON, STOPPED

require("ray")
require("optuna")

BIN = Path(sys.executable).parent
# Token authentication (Ray >= 2.5x) would need a shared token file; these nodes are all
# on 127.0.0.1. A lost node is declared dead after ~3 s instead of ~15 s.
ENV = {**os.environ, "LENET_NATIVE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
TRIALS, EPOCHS = 3, 3


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = children(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(pid: int) -> None:
    for p in [pid, *descendants(pid)]:  # Ray's workers are in their own process groups
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


class Cluster:
    def __init__(self, temp: Path) -> None:
        with socket.socket() as s:  # above Ray's worker port range (10002-19999)
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.temp, self.nodes = temp, []
        self.address = f"127.0.0.1:{self.port}"

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.temp / f"node{len(self.nodes)}.log", "w")  # noqa: SIM115 (Ray's)
        node = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
             *args], env=ENV, stdout=log, stderr=log,
            start_new_session=True)
        self.nodes.append(node)
        deadline = time.monotonic() + 60
        while not any("raylet" in _name(p) for p in descendants(node.pid)) or \
                ("--head" in args and not _answers(self.port)):
            assert node.poll() is None and time.monotonic() < deadline, \
                f"ray start failed: {Path(log.name).read_text()[-2000:]}"
            time.sleep(0.2)
        return node

    def raylet(self, node: subprocess.Popen) -> int:
        return next(p for p in descendants(node.pid) if "raylet" in _name(p))

    def kill(self, node: subprocess.Popen) -> None:
        kill_tree(node.pid)
        node.wait()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("ray"))
    try:
        c.start("--head", f"--port={c.port}", f"--temp-dir={c.temp}",
                "--include-dashboard=false")
        yield c
    finally:
        for node in c.nodes:
            c.kill(node)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    write_dataset(directory, n_train=500, n_test=100)
    return directory


def search_file(tmp_path: Path, data: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
out_dir = "{tmp_path / 'out'}"
[base]
dataset = "{data}"
epochs = {EPOCHS}
batch_size = 8
momentum = 0.9
val_split = 0.2
[search]
algorithm = "tpe"
trials = {TRIALS}
seed = 1
grace_period = 1
reduction_factor = 3
[space]
lr = {{ log-uniform = [0.005, 0.1] }}
"set.dropout" = {{ uniform = [0.0, 0.3] }}
[resources]
cpus = 1
""")
    return path


def attempts(run: Path) -> list[dict]:
    file = run / SEARCH_JSON
    return json.loads(file.read_text()).get("attempts", []) if file.exists() else []


def mid_trial(out: Path, where=lambda attempt: True) -> Path | None:
    """A trial past its first epoch, unfinished, whose latest attempt satisfies `where`."""
    for run in sorted(out.glob("trial-*")):
        if (run / "results.json").exists() or (run / STOPPED).exists() or \
                not (run / "metrics.csv").exists() or not attempts(run):
            continue
        if read_metrics(run / "metrics.csv") and where(attempts(run)[-1]):
            return run
    return None


def ended_once(out: Path) -> None:
    runs = sorted(out.glob("trial-*"))
    assert len(runs) == TRIALS, [r.name for r in runs]
    for run in runs:
        done, stopped = (run / "results.json").exists(), (run / STOPPED).exists()
        assert done != stopped, run.name
        rows = [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")]
        assert rows == list(range(1, len(rows) + 1)), run.name
        assert len(rows) == EPOCHS if done else len(rows) < EPOCHS


def driver(spec: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lenet", "sweep", str(spec), "--ray",
                             address], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(process: subprocess.Popen, condition, timeout: float = 150) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    return None


@pytest.mark.slow
def test_a_node_killed_mid_search_its_trial_resumes_on_the_other(cluster, data, tmp_path):
    second = cluster.start(f"--address={cluster.address}")
    raylet = cluster.raylet(second)
    spec, out = search_file(tmp_path, data, "node"), tmp_path / "out" / "node"
    search = driver(spec, cluster.address)
    try:
        victim = wait_for(search, lambda: mid_trial(
            out, lambda a: a.get("pid") in descendants(raylet)))
        assert victim is not None, "no trial was caught training on the second node"
        cluster.kill(second)
        output, _ = search.communicate(timeout=240)
    finally:
        kill_tree(search.pid)
    assert search.returncode == 0, output[-3000:]
    ended_once(out)
    tried = attempts(victim)
    assert len(tried) >= 2, tried
    # resumed from the run's own checkpoint; Tune's may be missing when the node died
    # between lenet writing its epoch and the trial reporting it to Tune
    assert tried[-1]["resumed_from_epoch"] >= 1, tried
    assert tried[-1]["node"] != tried[0]["node"]  # resumed on the node that is left
    for run in out.glob("trial-*"):  # only the killed trial was tried again
        assert len(attempts(run)) == (len(tried) if run == victim else 1), run.name
    assert "(stopped early)" in (out / "comparison.md").read_text() or all(
        (r / "results.json").exists() for r in out.glob("trial-*"))


@pytest.mark.slow
def test_the_driver_killed_mid_search_and_run_again_finishes_it(cluster, data, tmp_path):
    spec, out = search_file(tmp_path, data, "driver"), tmp_path / "out" / "driver"
    search = driver(spec, cluster.address)
    try:
        victim = wait_for(search, lambda: mid_trial(out))
        assert victim is not None, "no trial was caught mid-run"
        os.killpg(search.pid, signal.SIGKILL)  # the driver only: the cluster lives on
        search.wait()
    finally:
        kill_tree(search.pid)
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trial-*/results.json")}
    again = subprocess.run([sys.executable, "-m", "lenet", "sweep", str(spec), "--ray",
                            cluster.address], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "continuing" in again.stdout
    ended_once(out)  # the same number of trials: the searcher's state was restored
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # none redone
    tried = attempts(victim)
    assert len(tried) >= 2 and tried[-1]["resumed_from_epoch"] >= 1, tried


@pytest.mark.slow
def test_a_search_on_ray_ends_when_its_budget_is_spent(cluster, data, tmp_path):
    spec, out = search_file(tmp_path, data, "budget"), tmp_path / "out" / "budget"
    # 3 trials of 3 epochs could train 9; the budget allows 4 (one trial a time: 1 CPU)
    spec.write_text(spec.read_text().replace("grace_period = 1", "grace_period = 1\nbudget = 4"))

    def spent() -> int:
        return sum(len(read_metrics(f)) for f in out.glob("trial-*/metrics.csv"))

    for attempt in range(2):  # the second: the budget is spent, nothing trains
        done = subprocess.run([sys.executable, "-m", "lenet", "sweep", str(spec), "--ray",
                               cluster.address], env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "budget of 4 trial-epochs is spent" in done.stdout
        assert spent() == 4, attempt
    reasons = []
    for run in out.glob("trial-*"):
        if not (run / "results.json").exists():
            assert (run / STOPPED).exists(), run.name  # stopped by ASHA or by the budget
            reasons.append(json.loads((run / STOPPED).read_text())["reason"])
    # 4 is no trial's end (3 epochs each): the trial that trained the 4th epoch was cut
    assert any("budget of 4 trial-epochs is spent" in r for r in reasons), reasons


def test_trials_the_budget_cut_say_so_even_before_their_first_epoch(tmp_path):
    """The Budget stopper ends every running trial at once, with no callback from Tune: one
    that had not yet reported an epoch must still say why it has no results."""
    from types import SimpleNamespace

    from lenet.sweeps.tune_search import mark_cut_by_budget

    header = "epoch,train_loss,train_acc,val_loss,val_acc,lr,train_examples,examples_per_sec," \
             "seconds,wall_seconds,elapsed_seconds\n"
    row = "1,0.5,0.8,0.4,0.85,0.1,100,1000,0.1,0.2,0.3\n"
    trials = {name: tmp_path / f"trial-{name}"
              for name in ("done", "asha", "one", "none", "error")}
    for run_dir in trials.values():
        run_dir.mkdir()
        (run_dir / "config.json").write_text("{}")
    (trials["done"] / "results.json").write_text("{}")
    (trials["asha"] / STOPPED).write_text('{"reason": "asha"}')
    (trials["one"] / "metrics.csv").write_text(header + row)
    mark_cut_by_budget(SimpleNamespace(out=tmp_path, metric="val_acc"), "budget spent",
                       failed={"trial-error"})
    assert not (trials["error"] / STOPPED).exists()  # Tune tells its error
    assert not (trials["done"] / STOPPED).exists()
    assert json.loads((trials["asha"] / STOPPED).read_text())["reason"] == "asha"
    one = json.loads((trials["one"] / STOPPED).read_text())
    assert one == {"epoch": 1, "metric": "val_acc", "value": 0.85, "reason": "budget spent"}
    none = json.loads((trials["none"] / STOPPED).read_text())
    assert none["epoch"] == 0 and none["value"] is None and none["reason"] == "budget spent"
