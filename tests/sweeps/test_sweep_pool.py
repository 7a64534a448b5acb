"""`lenet sweep`'s process pool (lenet/sweeps/pool.py) when a worker dies: the pool breaks
under every run it holds; those go again in a new pool, and only the run that kills its
worker each time is recorded as failed."""

from __future__ import annotations

import pytest
from conftest import write_dataset
from sweep_tasks import KILLED_ENV, execute_or_die

from lenet.sweeps.pool import ATTEMPTS, run_in_pool
from lenet.sweeps.spec import load_spec
from lenet.sweeps.trial import FAILED


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_own_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data, n_train=200, n_test=100)
    spec = tmp_path / "s.toml"
    spec.write_text(f"""
name = "six"
out_dir = "{tmp_path / 'out'}"
[base]
dataset = "{data}"
epochs = 1
batch_size = 50
[grid]
seed = [0, 1, 2, 3, 4, 5]
""")
    _, out, runs = load_spec(spec)
    out.mkdir(parents=True)
    killer = runs[1].name  # shares the first pool with others, which break with it
    monkeypatch.setenv(KILLED_ENV, killer)
    monkeypatch.setenv("LENET_NATIVE", "0")  # no guard timing in six fresh workers
    lines: list[str] = []
    interrupted = run_in_pool(runs, 2, out / ".stopping", lines.append, task=execute_or_die)
    report = "\n".join(lines)
    assert not interrupted, report
    assert "a worker process died" in report
    assert f"{killer}: failed: its worker process died" in report
    assert f"in each of {ATTEMPTS} attempts" in (out / killer / FAILED).read_text()
    finished = sorted(p.parent.name for p in out.glob("*/results.json"))
    assert finished == sorted(r.name for r in runs if r.name != killer), report
    assert sum(": done" in line for line in lines) == len(runs) - 1
