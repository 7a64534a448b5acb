"""A run stopped (as by Ctrl-C) and resumed ends exactly as one that never stopped: the same
weights, metrics and saved state, whatever the run draws at random or keeps between steps
(dropout's RNG, augmentation, fp16's loss scale) and wherever it is stopped."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import QUIET, StopAfter

from lenet.models.settings import ModelSettings
from lenet.run import shortcuts as runner
from lenet.run.directory import read_metrics
from lenet.training import checkpoint
from lenet.training.config import TrainConfig

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    stop_after: int  # training steps before the stop (7 steps an epoch here)
    options: dict[str, Any] = field(default_factory=dict)

    def config(self, tmp_path, name: str) -> TrainConfig:
        base = dict(dataset="synthetic", model="lenet5-modern", optimizer="adam", lr=0.01,
                    batch_size=32, epochs=3, out_dir=str(tmp_path / "runs"), device="cpu",
                    seed=3)
        return TrainConfig(**{**base, **self.options, "name": name})


DROPOUT = {"model_settings": ModelSettings(dropout=0.2)}
CASES = {
    "dropout, mid-epoch": Case(4, DROPOUT),
    "dropout, at an epoch's end": Case(7, DROPOUT),
    "dropout, a later epoch": Case(15, DROPOUT),
    "augmentation": Case(5, {"augment": "flip+shift", "epochs": 2}),
    "fp16 loss scale": Case(13, {"precision": "fp16", "batch_size": 20}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_resumed_run_ends_as_an_uninterrupted_one(case, synthetic, tmp_path, monkeypatch):
    # fp16: grow the loss scale every 4 steps (not 2,000), so that its state changes in a
    # run this short and a resume that lost it would differ
    monkeypatch.setattr(torch.amp, "GradScaler",
                        functools.partial(torch.amp.GradScaler, growth_interval=4))
    config = case.config
    full = runner.train(config(tmp_path, "full"), console=QUIET)
    cut = runner.train(config(tmp_path, "cut"), console=QUIET, stop=StopAfter(case.stop_after))
    assert not cut.completed
    assert checkpoint.load(cut.run_dir)["epoch"] < full.history[-1]["epoch"]
    resumed = runner.resume(cut.run_dir, console=QUIET)
    assert resumed.completed
    finished, again = checkpoint.load(full.run_dir), checkpoint.load(resumed.run_dir)
    a, b = finished["model_state"], again["model_state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_acc"] for r in resumed.history] == [r["test_acc"] for r in full.history]
    epochs = [r["epoch"] for r in read_metrics(resumed.run_dir / "metrics.csv")]
    assert epochs == list(range(1, len(full.history) + 1))
    assert again["scaler_state"] == finished["scaler_state"]
    if case.options.get("precision") == "fp16":
        assert finished["scaler_state"]["scale"] != 65536.0  # it moved: the case tests it
