"""SGD's step in one native pass a tensor (lenet.native.sgd, lenet.training.optim.SGD):
torch.optim.SGD's floats to the bit (parameters, momentum buffers, the gradients Nesterov's
step leaves), where it runs and where it falls back to PyTorch's step."""

from __future__ import annotations

import io

import pytest
import torch

from lenet.native import sgd
from lenet.training.config import TrainConfig
from lenet.training.optim import SGD, build_optimizer

SHAPES = [(120, 400), (120,), (6, 1, 5, 5), (16, 6, 5, 5), (10, 84), (10,), (7,), (1,)]
SETTINGS = [
    {"momentum": 0.9, "nesterov": True},  # speed-90's
    {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},  # speed-92's
    {"momentum": 0.8, "dampening": 0.1, "weight_decay": 1e-3},
    {"momentum": 0.5},
]


def pair(settings: dict, layout: torch.memory_format = torch.contiguous_format
         ) -> tuple[list[torch.Tensor], SGD, list[torch.Tensor], torch.optim.SGD]:
    """Parameters under lenet's SGD and copies of them under PyTorch's foreach step."""
    torch.manual_seed(0)
    ours = [torch.randn(s).to(memory_format=layout if len(s) == 4 else torch.contiguous_format)
            .requires_grad_() for s in SHAPES]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return (ours, SGD(ours, lr=0.1, foreach=True, **settings),
            theirs, torch.optim.SGD(theirs, lr=0.1, foreach=True, **settings))


def steps(ours, optimizer, theirs, reference, n: int = 12, lr: float = 0.3) -> None:
    for step in range(n):
        grads = [torch.empty_like(p).copy_(torch.randn(p.shape)) for p in ours]  # p's strides
        for group in (optimizer.param_groups[0], reference.param_groups[0]):
            group["lr"] = lr * (step + 1) / n  # as a schedule moves it
        for params, opt in ((ours, optimizer), (theirs, reference)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()  # (the same strides: autograd's for a parameter)
            opt.step()



def assert_same(ours, optimizer, theirs, reference) -> None:
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(p.grad, q.grad)  # Nesterov's step leaves g + momentum * buf
        assert torch.equal(optimizer.state[p]["momentum_buffer"],
                           reference.state[q]["momentum_buffer"])


def test_the_native_step_gives_pytorch_s_floats_here():
    """The check that gates it: false would leave every step to PyTorch, silently slower.
    (scripts/test-native.sh runs this at each ISA level, with ATen's matching its FMAs.)"""
    assert sgd.library() is not None
    assert sgd.reproduces_torch(), sgd.describe()
    assert sgd.usable()


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in
                                                                       s.items()))
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last],
                         ids=["contiguous", "channels-last"])
def test_steps_are_torch_s_to_the_bit(settings, layout, monkeypatch):
    calls = []
    run = sgd.run
    monkeypatch.setattr(sgd, "run", lambda *a: (calls.append(1), run(*a)))
    ours, optimizer, theirs, reference = pair(settings, layout)
    steps(ours, optimizer, theirs, reference)
    assert len(calls) == 12  # every step ran natively
    assert_same(ours, optimizer, theirs, reference)


def test_strides_of_dimensions_of_size_one_do_not_matter():
    """conv1's (6, 1, 5, 5) weight in channels-last and its gradient contiguous: the same
    floats in the same places, so the native step takes them."""
    ours, optimizer, theirs, reference = pair(SETTINGS[0], torch.channels_last)
    assert ours[2].stride() != (25, 25, 5, 1)
    for params, opt in ((ours, optimizer), (theirs, reference)):
        for p in params:
            p.grad = torch.full(p.shape, 0.5)  # contiguous
        opt.step()
    assert (optimizer.state[ours[2]]["momentum_buffer"].stride()  # the gradient's, as PyTorch's
            == reference.state[theirs[2]]["momentum_buffer"].stride())
    assert_same(ours, optimizer, theirs, reference)


def test_parameters_without_gradients_are_left_alone(monkeypatch):
    calls = []
    run = sgd.run
    monkeypatch.setattr(sgd, "run", lambda *a: (calls.append(1), run(*a)))
    ours, optimizer, theirs, reference = pair(SETTINGS[1])
    frozen = ours[2].detach().clone()
    for step in range(3):
        for params, opt in ((ours, optimizer), (theirs, reference)):
            for k, p in enumerate(params):
                p.grad = None if k == 2 else torch.full(p.shape, 0.01 * (step + 1))
            opt.step()
    assert len(calls) == 3  # natively, the others' step
    assert torch.equal(ours[2], frozen)
    assert "momentum_buffer" not in optimizer.state[ours[2]]
    for k, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.equal(p, q)
        if k != 2:
            assert torch.equal(optimizer.state[p]["momentum_buffer"],
                               reference.state[q]["momentum_buffer"])


def test_a_parameter_that_starts_getting_gradients_joins_the_step():
    ours, optimizer, theirs, reference = pair(SETTINGS[0])
    for step in range(4):  # parameter 2 idle for two steps, then trained
        for params, opt in ((ours, optimizer), (theirs, reference)):
            for k, p in enumerate(params):
                p.grad = None if k == 2 and step < 2 else torch.full(p.shape, 0.1 * (step + 1))
            opt.step()
    assert_same(ours, optimizer, theirs, reference)


@pytest.mark.parametrize("case", ["maximize", "closure", "float64", "no momentum", "foreach off",
                                  "buffer laid out otherwise", "off"])
def test_what_it_does_not_cover_takes_pytorch_s_step(case, monkeypatch):
    settings = {"momentum": 0.0} if case == "no momentum" else dict(SETTINGS[0])
    if case == "maximize":
        settings["maximize"] = True
    if case == "off":
        monkeypatch.setenv("LENET_NATIVE", "0")
    ours, optimizer, theirs, reference = pair(settings)
    if case == "float64":
        ours = [ours[0].detach().double().requires_grad_()]
        theirs = [theirs[0].detach().double().requires_grad_()]
        optimizer = SGD(ours, lr=0.1, foreach=True, **settings)
        reference = torch.optim.SGD(theirs, lr=0.1, foreach=True, **settings)
    if case == "foreach off":
        optimizer.param_groups[0]["foreach"] = False
    if case == "buffer laid out otherwise":  # as a checkpoint of another layout would load
        p = ours[3]
        optimizer.state[p]["momentum_buffer"] = torch.zeros(p.shape).to(
            memory_format=torch.channels_last)
        reference.state[theirs[3]]["momentum_buffer"] = torch.zeros(p.shape)
    monkeypatch.setattr(sgd, "run", lambda *a: pytest.fail("the native step ran"))
    if case == "closure":
        for _ in range(3):
            for params, opt in ((ours, optimizer), (theirs, reference)):
                def closure(params=params):
                    for p in params:
                        p.grad = torch.ones_like(p)
                    return torch.tensor(1.5)
                assert opt.step(closure) == 1.5
    else:
        steps(ours, optimizer, theirs, reference, n=3)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("momentum", [0.9, 0.0], ids=["native", "pytorch"])
def test_hooks_run_once_a_step_on_either_path(momentum):
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # wraps SGD.step in hooks
    p = torch.zeros(3, requires_grad=True)
    optimizer = SGD([p], lr=0.1, momentum=momentum, foreach=True)
    seen: list[str] = []
    optimizer.register_step_pre_hook(lambda *_: seen.append("pre"))
    optimizer.register_step_post_hook(lambda *_: seen.append("post"))
    p.grad = torch.ones(3)
    optimizer.step()
    assert seen == ["pre", "post"]
    assert torch.equal(p.detach(), torch.full((3,), -0.1))


def test_a_checkpoint_resumes_to_the_same_floats():
    ours, optimizer, theirs, reference = pair(SETTINGS[1])
    steps(ours, optimizer, theirs, reference, n=4)
    saved = io.BytesIO()
    torch.save(optimizer.state_dict(), saved)
    saved.seek(0)
    resumed = SGD(ours, lr=0.1, foreach=True, **SETTINGS[1])
    resumed.load_state_dict(torch.load(saved))
    steps(ours, resumed, theirs, reference, n=4)
    assert_same(ours, resumed, theirs, reference)


def test_the_recipes_get_it():
    model = torch.nn.Linear(3, 2)
    assert type(build_optimizer(model.parameters(), TrainConfig(recipe="speed-90"))) is SGD
    assert type(build_optimizer(model.parameters(), TrainConfig(optimizer="adam"))) is not SGD
    book = build_optimizer(model.parameters(), TrainConfig())  # no momentum: PyTorch's own
    assert type(book) is torch.optim.SGD and book.defaults["foreach"] is True
