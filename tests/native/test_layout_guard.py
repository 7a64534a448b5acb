"""The layout guard (lenet/native/layout.py): channels-last for a LeNet the kernel does not
fuse only where a training step measured at least 10% faster in it; decided once per
setting and cached. Timings come from a fake clock, never from the machine's load."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.native import guard, layout
from lenet.native.fastpath import prepare_model

CPU = torch.device("cpu")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float):
        def run() -> None:
            self.now += seconds
        return run


@pytest.fixture
def timed(tmp_path, monkeypatch):
    """The guard's contenders replaced by fake steps: set `timed.seconds` = (NHWC, NCHW)."""
    clock = Clock()
    monkeypatch.setattr(layout, "cache_file", lambda: tmp_path / "layout.guard.json")
    layout.forget()
    monkeypatch.setattr(layout, "_SETTINGS", {**layout._SETTINGS, "timer": clock})
    state = SimpleNamespace(seconds=(0.001, 0.003), made=[],
                            file=tmp_path / "layout.guard.json")

    def contenders(model, input_shape, batch):
        state.made.append((input_shape, batch))
        return tuple(clock.step(s) for s in state.seconds)

    monkeypatch.setattr(layout, "contenders", contenders)
    yield state
    layout.forget()


def channels_last(model) -> bool:
    weight = model.conv2.weight  # (out, in, k, k) with in > 1: the layouts differ
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_channels_last_where_faster_and_cached(timed, monkeypatch):
    model = prepare_model(build_model(MODELS["lenet-100k"], seed=0), CPU, batch_size=128)
    assert channels_last(model) and timed.made == [((1, 28, 28), 128)]
    stored = json.loads(timed.file.read_text())["decisions"]
    (key, decision), = stored.items()
    assert "98,922 parameters" in key and "batch 65-128" in key and decision["use_kernel"]
    assert "channels-last 1 ms vs contiguous 3 ms" in decision["why"]
    # another process (decisions forgotten) reads the file: no second measurement
    layout.forget()
    prepare_model(build_model(MODELS["lenet-100k"], seed=1), CPU, batch_size=100)
    assert len(timed.made) == 1
    # LENET_NATIVE forces the kernel, not the layout: still measured, not forced
    monkeypatch.setenv("LENET_NATIVE", "1")
    assert layout.decide(build_model(MODELS["lenet-100k"]), (1, 28, 28), 8).source == "measured"


def test_contiguous_kept_where_not_ten_percent_faster(timed):
    timed.seconds = (0.0095, 0.0100)
    model = prepare_model(build_model(MODELS["lenet-100k"], seed=0), CPU, batch_size=64)
    assert not channels_last(model) and model.conv2.weight.is_contiguous()
    why = layout.decide(model, (1, 28, 28), 64).why
    assert "not 10% faster, the contiguous layout is kept" in why


def test_no_measurement_without_a_batch_size_or_for_the_kernels_shapes(timed):
    prepare_model(build_model(MODELS["lenet-100k"], seed=0), CPU)  # inference: no batch
    modern_bn = replace(MODELS["lenet5-modern"], batch_norm=True)
    model = prepare_model(build_model(modern_bn, seed=0), CPU, batch_size=128)
    if model.blocks_kernel is not None:  # fused: the NHWC rule for LeNet-5's shapes holds
        assert timed.made == []
    assert not channels_last(model)


@pytest.mark.slow
def test_real_contenders_train_copies_in_both_layouts():
    model = build_model(MODELS["lenet-100k"], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nhwc, nchw = layout.contenders(model, (1, 28, 28), 4)
    nhwc()
    nchw()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_guard_names_default_to_the_kernels():
    g = guard.KernelGuard(None, timer=Clock())
    assert g.names[0] == "fused" and g.forcible


@pytest.mark.slow
def test_measuring_leaves_the_random_draws_of_the_run_alone(tmp_path, monkeypatch):
    """A model with dropout steps in training mode while it is measured: the run that
    measured must draw the same random numbers after it as a run that read the decision
    (best-62k's first seed on a fresh machine once ended 0.003 apart from the others)."""
    monkeypatch.setattr(layout, "cache_file", lambda: tmp_path / "layout.guard.json")
    monkeypatch.setattr(layout, "_SETTINGS", {**layout._SETTINGS, "budget_s": 0.05})
    layout.forget()
    config = replace(MODELS["lenet-100k"], dropout=0.5)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    decision = layout.decide(build_model(config, seed=0), (1, 28, 28), 8)
    assert decision.source == "measured" and decision.rounds >= 1
    assert torch.equal(torch.get_rng_state(), before)
    layout.forget()
    assert layout.decide(build_model(config, seed=0), (1, 28, 28), 8).source == "cache"
    layout.forget()
