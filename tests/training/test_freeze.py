"""FreezeOut (lenet.training.freeze): the first conv block stops learning after a share of
the steps, in a run and across a resumed one."""

import pytest
import torch
from conftest import QUIET

from lenet.errors import ConfigError
from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.run import shortcuts as runner
from lenet.training import checkpoint
from lenet.training import freeze as freezing
from lenet.training.config import TrainConfig


def test_the_block_is_frozen_at_its_step_and_stays_frozen():
    model = build_model(MODELS["lenet5-modern"], seed=0)
    first = freezing.first_block(model)
    assert [p.shape for p in first] == [model.conv1.weight.shape, model.conv1.bias.shape]
    assert freezing.freezer(model, None, 2, 10, 0, 0) is None
    assert freezing.freezer(model, 0.6, 2, 10, 0, 0) is None  # step 12: the next epoch's
    assert all(p.requires_grad for p in first)
    on_step = freezing.freezer(model, 0.6, 2, 10, 1, 0)
    on_step(1)
    assert all(p.requires_grad for p in first)
    on_step(2)  # global step 10 + 2
    assert not any(p.requires_grad for p in first)
    assert all(p.requires_grad for p in model.conv2.parameters())
    # a run resumed past the step is frozen before it goes on
    again = build_model(MODELS["lenet5-modern"], seed=0)
    assert freezing.freezer(again, 0.6, 2, 10, 1, 5) is None
    assert not any(p.requires_grad for p in freezing.first_block(again))


def test_a_run_stops_training_the_first_block(synthetic, tmp_path, monkeypatch):
    seen = {}
    original = freezing.freeze

    def spy(parameters):
        original(parameters)
        seen["first"] = [p.detach().clone() for p in parameters]
        seen["calls"] = seen.get("calls", 0) + 1

    monkeypatch.setattr(freezing, "freeze", spy)
    config = TrainConfig(dataset="synthetic", model="lenet5-modern", batch_size=32, epochs=2,
                         lr=0.05, momentum=0.9, out_dir=str(tmp_path / "runs"), device="cpu",
                         freeze_first_block=0.3)
    result = runner.train(config, console=QUIET)
    assert seen["calls"] == 1
    model = checkpoint.load_model(result.run_dir)
    for before, after in zip(seen["first"], freezing.first_block(model), strict=True):
        assert torch.equal(before, after)  # not one update after its step
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("share", [0.0, 1.5, -0.5])
def test_the_share_is_checked(share):
    with pytest.raises(ConfigError, match="freeze-first-block"):
        TrainConfig(freeze_first_block=share)


def test_a_share_of_one_never_freezes():
    model = build_model(MODELS["lenet5-modern"], seed=0)
    for epoch in range(2):
        on_step = freezing.freezer(model, 1.0, 2, 10, epoch, 0)
        for step in range(1, 11):
            if on_step is not None:
                on_step(step)
    assert all(p.requires_grad for p in freezing.first_block(model))


def test_several_processes_are_refused_before_launching(capsys):
    from lenet.cli import main

    assert main(["train", "--recipe", "speed-90", "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "lenet: error: --freeze-first-block trains in one process only" in err
    freezing.check_processes(1.0, 2)  # 1: never frozen, so any number of processes
    freezing.check_processes(0.6, 1)
