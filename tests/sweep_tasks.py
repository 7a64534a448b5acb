"""What the process pool's workers run in tests/sweeps/test_sweep_pool.py: importable by name, as
a spawned worker needs."""

from __future__ import annotations

import os
from pathlib import Path

from lenet.sweeps.spec import PlannedRun
from lenet.sweeps.trial import execute

KILLED_ENV = "LENET_TEST_KILLED_RUN"


def execute_or_die(run: PlannedRun) -> str:
    """`execute`, except that the run named in $LENET_TEST_KILLED_RUN kills its worker, as
    kill -9 or the OOM killer would, every time, once it has started (its train.log)."""
    if run.name == os.environ.get(KILLED_ENV):
        log = Path(run.config.out_dir) / run.name / "train.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("training...\n")
        os._exit(9)
    return execute(run)
