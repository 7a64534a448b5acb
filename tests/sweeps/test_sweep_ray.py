"""`lenet sweep --ray` (lenet/sweeps/on_ray.py): 4 small runs as Ray tasks on a local Ray of
2 CPUs give the process pool's results; a rerun runs only the missing runs; a run that
fails, or whose worker is killed, is recorded with its error and the others finish.

Ray takes 5-10 s to start: one session serves the whole module, its files under tmp."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_dataset

from lenet.errors import ConfigError
from lenet.sweeps.spec import load_spec
from lenet.sweeps.sweep import run_sweep
from lenet.sweeps.trial import FAILED

if os.environ.get("CI"):
    import ray  # CI installs the extra: a missing Ray fails here
else:
    ray = pytest.importorskip("ray")

from lenet.sweeps.on_ray import reachable, resources, run_on_ray

# The fused kernel forced in every process (the pool's workers and Ray's, which inherit this
# environment when they start): the guard's timing must not choose different paths.
ENV = {"LENET_NATIVE": "1"}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module-wide; restored afterwards
        for key, value in ENV.items():
            mp.setenv(key, value)
        temp = tmp_path_factory.mktemp("ray")  # sockets, logs, object store spill: all here
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(temp), object_store_memory=100 * 2**20)
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    write_dataset(directory, n_train=400, n_test=200)
    return directory


def sweep_file(tmp_path: Path, data: Path, out: Path) -> Path:
    spec = tmp_path / f"{out.name}.toml"
    spec.write_text(f"""
name = "four"
out_dir = "{out}"
[base]
dataset = "{data}"
epochs = 2
batch_size = 64
momentum = 0.9
[grid]
lr = [0.05, 0.1]
seed = [0, 1]
[resources]
cpus = 1
""")
    return spec


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted(sweep_dir.glob("*/results.json"))}


@pytest.mark.slow
def test_ray_runs_match_the_process_pool_and_a_rerun_runs_only_missing_ones(
        local_ray, data, tmp_path):
    lines: list[str] = []
    pool = run_sweep(sweep_file(tmp_path, data, tmp_path / "pool"), workers=2,
                     say=lambda s: None)
    on_ray = run_sweep(sweep_file(tmp_path, data, tmp_path / "ray"), ray="local",
                       say=lines.append)
    assert any(line.startswith("Ray: 4 run(s)") for line in lines)
    assert [s.name for s in on_ray] == [s.name for s in pool]  # ranked alike
    by_pool, by_ray = results(tmp_path / "pool" / "four"), results(tmp_path / "ray" / "four")
    assert len(by_ray) == 4 and by_ray.keys() == by_pool.keys()
    for name, final in by_ray.items():  # the same seeds, threads and path: the same figures
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert final[key] == pytest.approx(by_pool[name][key], rel=1e-6, abs=1e-7), name
    for name in ("comparison.md", "comparison.csv", "comparison.json", "curves.png"):
        assert (tmp_path / "ray" / "four" / name).is_file()
    # Stopped half-way: two runs gone. The rerun, by `lenet sweep --ray ADDRESS` joining
    # this module's Ray as a running cluster, runs those two only.
    kept = {n: (tmp_path / "ray" / "four" / n / "results.json").stat().st_mtime_ns
            for n in list(by_ray)[2:]}
    for name in list(by_ray)[:2]:
        shutil.rmtree(tmp_path / "ray" / "four" / name)
    address = ray.get_runtime_context().gcs_address
    rerun = subprocess.run([str(Path(sys.executable).parent / "lenet"), "sweep",
                            str(tmp_path / "ray.toml"), "--ray", address],
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lines = rerun.stdout.splitlines()
    assert "4 runs, 2 already done" in lines[0]
    assert f"on the cluster at {address}" in rerun.stdout
    assert sum(": done" in line for line in lines) == 2
    assert {n: (tmp_path / "ray" / "four" / n / "results.json").stat().st_mtime_ns
            for n in kept} == kept
    assert results(tmp_path / "ray" / "four").keys() == by_pool.keys()


@pytest.mark.slow
def test_a_failing_and_a_killed_run_are_recorded_and_the_others_finish(local_ray, data,
                                                                        tmp_path):
    spec = sweep_file(tmp_path, data, tmp_path / "faults")
    _, out, runs = load_spec(spec)
    out.mkdir(parents=True)
    failing, killed = runs[0].name, runs[1].name

    def task(run, threads):  # what the worker runs: two of the four runs go wrong
        if run.name == failing:
            raise ConfigError("a run that fails")
        if run.name == killed:
            os._exit(9)  # its worker dies, as under kill -9 or the OOM killer
        from lenet.sweeps.on_ray import trial

        return trial(run, threads)

    lines: list[str] = []
    interrupted = run_on_ray(runs, "local", spec, out / ".stopping", lines.append, task=task)
    assert not interrupted
    report = "\n".join(lines)
    assert f"{failing}: failed: a run that fails" in report
    assert f"{killed}: failed: " in report
    assert (out / failing / FAILED).read_text() == "a run that fails\n"
    assert (out / killed / FAILED).is_file()
    assert sorted(results(out)) == sorted(r.name for r in runs[2:])  # the others finished


def test_resources_per_run_come_from_the_sweep_file(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("[resources]\ncpus = 2\ngpus = 0.5\n")
    assert resources(spec) == (2.0, 0.5)
    spec.write_text("")
    assert resources(spec) == (1.0, 0.0)
    spec.write_text("[resources]\ncpus = 0\n")
    with pytest.raises(ConfigError, match="cpus must be a number >= 1"):
        resources(spec)
    spec.write_text("[resources]\nmemory = 3\n")
    with pytest.raises(ConfigError, match="only cpus and gpus"):
        resources(spec)


def test_an_address_nothing_answers_on_is_refused_at_once():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="no Ray cluster answers there"):
        reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        reachable("head-node")
    reachable("auto")  # Ray finds it (or says it cannot)


def test_without_ray_the_cli_says_how_to_install_it(monkeypatch, data, tmp_path, capsys):
    from lenet.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = sweep_file(tmp_path, data, tmp_path / "no-ray")
    assert main(["sweep", str(spec), "--ray"]) == 2
    assert "pip install 'lenet[ray]'" in capsys.readouterr().err
