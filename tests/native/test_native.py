"""The fused LeNet-5 kernel (lenet/native): as close to a float64 reference as PyTorch's
float32 layers are, and the fallbacks that keep everything else on PyTorch's kernels.

Every test here runs with LENET_NATIVE=1 (the kernel, no guard: the guard's choice depends
on timing). CI runs this file once per forced ISA level (LENET_NATIVE_MARCH).
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenet.errors import ConfigError
from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.models.settings import with_settings
from lenet.native import lenet5
from lenet.native.fastpath import kernel_blocks, kernel_path, layer_by_layer, prepare_model
from lenet.predict import activations

CPU = torch.device("cpu")
FACTOR = 2.0  # the kernel may be at most this many times PyTorch's float32 error ...
FLOOR = 1e-6  # ... plus this, times the size of the values (at least 1)
# Behind a batch norm, each conv gradient sums 100,000 terms (batch 128) that nearly cancel
# (a conv bias before a batch norm has a true gradient of 0). There the kernel's float32
# terms leave up to 5e-5 of the largest gradient (measured: conv1's weight in the SSE build,
# which has no FMA; 3e-5 for conv2's bias), PyTorch's up to 1e-5: this floor, not FLOOR.
BN_GRAD_FLOOR = 8e-5


@pytest.fixture(autouse=True)
def kernel_forced(monkeypatch):
    monkeypatch.setenv("LENET_NATIVE", "1")


def assert_as_accurate(got, pytorch, truth, what="", floor=FLOOR, scale=None):
    """`got`'s largest error against the float64 `truth` is no more than FACTOR times
    PyTorch's float32 one, plus `floor` times `scale` (default: the largest |truth|, at
    least 1)."""
    truth = truth.double()
    err = (got.double() - truth).abs().max().item()
    ref = (pytorch.double() - truth).abs().max().item()
    bound = FACTOR * ref + floor * max(1.0, scale or truth.abs().max().item())
    assert err <= bound, (f"{what}: kernel error {err:.3g} vs float64, PyTorch float32's "
                          f"{ref:.3g} (bound {bound:.3g})")


def test_the_kernel_builds_here():
    # CI and the README's set-up have a C compiler; without the kernel lenet is ~2x slower.
    assert lenet5.available(), lenet5.why_not()
    built = lenet5.built()
    # Serial only where the OpenMP build failed (Apple clang has no -fopenmp), and then its
    # log says why.
    assert lenet5.library().lenet5_parallel() == int(built.openmp)
    if not built.openmp:
        assert built.failed and "-fopenmp" in built.failed[0].read_text()


def blocks(activation: str, pool: str, batch_norm: bool = False) -> nn.Sequential:
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    pool_layer = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
    norm = nn.BatchNorm2d if batch_norm else (lambda _: nn.Identity())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), norm(6), act(), pool_layer(2, 2),
                          nn.Conv2d(6, 16, 5), norm(16), act(), pool_layer(2, 2))
    if batch_norm:  # affines that are not identities
        with torch.no_grad():
            for bn in (model[1], model[5]):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)
    return model


def fused(model: nn.Sequential, x: torch.Tensor, activation: str, pool: str,
          batch_norm: bool) -> torch.Tensor:
    norms = (model[1], model[5]) if batch_norm else (None, None)
    return lenet5.conv_blocks(x, model[0], model[4], activation, pool, *norms)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("activation,pool", [("sigmoid", "avg"), ("relu", "max"),
                                             ("sigmoid", "max"), ("relu", "avg")])
@pytest.mark.parametrize("batch", [1, 7, 37, pytest.param(128, marks=pytest.mark.slow)])
def test_forward_and_weight_gradients_as_accurate_as_pytorchs(activation, pool, batch,
                                                               batch_norm):
    reference = blocks(activation, pool, batch_norm)
    exact = copy.deepcopy(reference).double()
    x = torch.rand(batch, 1, 28, 28)
    if batch > 1 or not batch_norm:  # (a batch of one blank image has no variance to norm)
        x[0] = 0.0  # a blank image: ReLU then max-pooling sees ties; the first maximum wins
    grad = torch.randn(batch, 16, 5, 5)

    truth = exact(x.double())
    truth.backward(grad.double())
    expected = reference(x)
    expected.backward(grad)
    want = [(p.grad.clone(), q.grad) for p, q in zip(reference.parameters(),
                                                     exact.parameters(), strict=True)]
    reference.zero_grad()

    out = fused(reference, x, activation, pool, batch_norm)
    assert_as_accurate(out, expected, truth, "forward")
    out.backward(grad)
    largest = max(w64.abs().max().item() for _, w64 in want)
    names = [name for name, _ in reference.named_parameters()]
    for name, p, (w, w64) in zip(names, reference.parameters(), want, strict=True):
        assert_as_accurate(p.grad, w, w64, f"gradient of {name}",
                           BN_GRAD_FLOOR if batch_norm else FLOOR, largest)
    with torch.no_grad():  # inference: no saved maps, same output
        torch.testing.assert_close(fused(reference, x, activation, pool, batch_norm), out)


def test_results_do_not_depend_on_timing():
    reference = blocks("sigmoid", "avg")
    x = torch.rand(64, 1, 28, 28)
    runs = []
    for _ in range(3):
        reference.zero_grad()
        fused(reference, x, "sigmoid", "avg", False).sum().backward()
        runs.append(torch.cat([p.grad.flatten() for p in reference.parameters()]))
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("name,settings,fused", [
    ("lenet5", {}, ("sigmoid", "avg", False)),
    ("lenet5-modern", {}, ("relu", "max", False)),
    ("lenet5-modern", {"batch_norm": "true"}, ("relu", "max", True)),
    ("lenet5", {"activation": "tanh"}, None),
    ("lenet5", {"channels": "6,32"}, None),
    ("lenet5", {"kernel": "3"}, None),
    ("lenet5", {"pool_size": "3"}, None),
    ("lenet5", {"channels": "6,16,32"}, None),
    ("lenet-100k", {}, None),
])
def test_which_models_run_fused(name, settings, fused):
    model = build_model(with_settings(MODELS[name], settings))
    blocks = kernel_blocks(model.conv_blocks())
    assert (blocks.kind if blocks is not None else None) == fused
    prepare_model(model, CPU)
    assert (kernel_path(model) is not None) == (fused is not None)


def test_fused_model_falls_back_where_the_kernel_cannot_serve(monkeypatch):
    plain = build_model(MODELS["lenet5"], seed=0)
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    assert kernel_path(fast) is not None
    x = torch.rand(5, 1, 28, 28)

    # activation capture hooks the layers inside the fused blocks: they must fire
    out, acts = activations.capture(fast, x)
    ref_out, ref_acts = activations.capture(plain, x)
    torch.testing.assert_close(out, ref_out)
    for name in acts:
        torch.testing.assert_close(acts[name], ref_acts[name])

    # gradients with respect to the input (saliency) need PyTorch's layers: the kernel gives
    # none, so it must not run, and the input gradients are PyTorch's
    exact = copy.deepcopy(plain).double()
    xs = [x.clone().requires_grad_() for _ in range(3)]
    exact(xs[2].double()).sum().backward()
    plain(xs[0]).sum().backward()
    with monkeypatch.context() as m:
        m.setattr(lenet5, "conv_blocks", lambda *a, **k: pytest.fail("the kernel ran"))
        fast(xs[1]).sum().backward()
    assert_as_accurate(xs[1].grad, xs[0].grad, xs[2].grad, "input gradient")

    # bf16 autocast: the user asked for bf16 arithmetic, so PyTorch's kernels run it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16

    # other input sizes and dtypes fail (or not) as the layers would
    with pytest.raises(RuntimeError):
        fast(torch.rand(2, 1, 32, 32))
    double = copy.deepcopy(fast).double()  # float64 weights: the layers, in float64
    torch.testing.assert_close(double(x.double()).float(), plain(x), rtol=1e-5, atol=1e-6)


def test_hooks_on_fused_layers_fire_layer_by_layer_only(monkeypatch):
    # PyTorch has no public way to ask whether a layer has hooks: a fused call runs conv1 ...
    # pool2 as one (their hooks do not fire), `layer_by_layer()` runs them as modules.
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    x = torch.rand(4, 1, 28, 28)
    seen = []
    handles = [fast.act1.register_forward_hook(lambda *_: seen.append("act1")),
               fast.output.register_forward_hook(lambda *_: seen.append("output"))]
    with monkeypatch.context() as m:
        m.setattr(lenet5, "conv_blocks", lambda *a, **k: seen.append("kernel") or
                  torch.zeros(len(a[0]), *lenet5.OUTPUT_SHAPE))
        fast(x)
        assert seen == ["kernel", "output"]  # the layers after the blocks are modules
        seen.clear()
        with layer_by_layer():
            fast(x)
        assert seen == ["act1", "output"]
    for handle in handles:
        handle.remove()


def test_a_prepared_model_reads_and_loads_as_the_plain_one(tmp_path):
    from lenet.models.summary import format_summary, summarize
    from lenet.training import checkpoint

    config = with_settings(MODELS["lenet5-modern"], {"batch_norm": "true"})
    plain = build_model(config, seed=0)
    fast = prepare_model(build_model(config, seed=3), CPU)
    assert kernel_path(fast) is not None and type(fast) is type(plain)
    assert repr(fast) == repr(plain)
    assert format_summary(summarize(fast)) == format_summary(summarize(plain))
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in plain.named_parameters()]
    checkpoint.save(tmp_path / "plain.pt", {"model_config": config.to_dict(),  # as before
                                            "model_state": plain.state_dict()})
    fast.load_state_dict(checkpoint.load(tmp_path / "plain.pt")["model_state"])
    x = torch.rand(6, 1, 28, 28)
    fast.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    copied = copy.deepcopy(fast)  # the copy's kernel path reads the copy's layers
    assert kernel_path(copied).kernel.conv1 is copied.conv1


def train_three(config, x, y, steps, **sgd):
    """The same model trained `steps` SGD steps three ways: PyTorch's layers in float32, the
    fused kernel, PyTorch's layers in float64 (the reference); their state dicts."""
    plain = build_model(config, seed=0)
    fast = prepare_model(build_model(config, seed=0), CPU)
    assert kernel_path(fast) is not None
    exact = copy.deepcopy(plain).double()
    for model in (plain, fast, exact):
        optim = torch.optim.SGD(model.parameters(), **sgd)
        for _ in range(steps):
            optim.zero_grad()
            F.cross_entropy(model(x.to(next(model.parameters()).dtype)), y).backward()
            optim.step()
    return plain, fast, exact


def assert_trained_as_accurately(plain, fast, exact):
    for (key, a), b, t in zip(plain.state_dict().items(), fast.state_dict().values(),
                              exact.state_dict().values(), strict=True):
        if t.is_floating_point():
            assert_as_accurate(b, a, t, key)
        else:
            assert torch.equal(a, b), key


@pytest.mark.slow
def test_fused_model_trains_like_the_plain_one():
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    plain, fast, exact = train_three(MODELS["lenet5"], x, y, 5, lr=0.5)
    assert_trained_as_accurately(plain, fast, exact)


def test_the_books_own_classes_run_fused():
    from lenet import d2l

    model = d2l.LeNet(lr=0.1)
    model.apply_init([torch.rand(2, 1, 28, 28)], d2l.init_cnn)
    prepare_model(model, CPU)
    assert kernel_path(model) is not None  # its `net` is lenet's LeNet
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_the_books_sequential_runs_fused(monkeypatch):
    from lenet import d2l
    from lenet.d2l.fused import SequentialKernel

    class Chapter(d2l.Classifier):  # the chapter's own LeNet, with plain layers
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
                nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),
                nn.Linear(84, 10))

    torch.manual_seed(0)
    model = Chapter()
    plain = copy.deepcopy(model.net)
    d2l.Trainer(max_epochs=1).prepare_model(model)
    assert type(model.net) is nn.Sequential and isinstance(model.fused_net, SequentialKernel)
    x = torch.rand(9, 1, 28, 28)
    ran = []
    kernel = lenet5.conv_blocks
    monkeypatch.setattr(lenet5, "conv_blocks", lambda *a, **k: ran.append(1) or kernel(*a, **k))
    torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-6)
    assert ran
    model.net[1] = nn.Tanh()  # another model: not the kernel's blocks
    assert SequentialKernel.of(model.net) is None


@pytest.mark.parametrize("name,settings,native", [
    ("lenet5", {}, True), ("lenet5-modern", {}, True), ("lenet5", {"dense": "200"}, True),
    ("lenet5", {"dense": ""}, True), ("lenet5", {"dropout": "0.5"}, True),
    ("lenet5-modern", {"batch_norm": "true"}, True), ("lenet5", {"batch_norm": "true"}, True),
    ("lenet5", {"channels": "6,32"}, False), ("lenet5", {"activation": "tanh"}, False)])
def test_native_single_image_path_matches_pytorch(name, settings, native):
    from lenet.predict.predictor import Predictor

    model = build_model(with_settings(MODELS[name], settings), seed=1)
    with torch.no_grad():  # batch norms with statistics and affines that are not identities
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    images = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8).numpy()
    predictor = Predictor(model, [str(k) for k in range(10)], backend="torch")
    want = predictor.logits(images).numpy()
    if not native:
        with pytest.raises(ConfigError, match="native backend"):
            Predictor(model, [str(k) for k in range(10)], backend="native")
        return
    fast = Predictor(model, [str(k) for k in range(10)], backend="native")
    for image, logits in zip(images, want, strict=True):
        np.testing.assert_allclose(fast.logits_one(image), logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="28, 28"):
        fast.logits_one(images[0][:20])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "lenet5-modern"])
def test_batch_norm_blocks_train_like_pytorchs(name):
    config = with_settings(MODELS[name], {"batch_norm": "true"})
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 10
    plain, fast, exact = train_three(config, x, y, 4, lr=0.2, momentum=0.9)
    assert kernel_path(fast).kernel.kind[2]  # batch norm, in the kernel
    # weights, biases, batch norm parameters and running statistics all follow float64 as
    # closely as PyTorch's float32 layers do
    assert_trained_as_accurately(plain, fast, exact)
    for model in (plain, fast, exact):
        model.eval()
    with torch.no_grad():  # eval mode: the running statistics, fused
        assert_as_accurate(fast(x), plain(x), exact(x.double()), "eval-mode logits")
    # eval mode with gradients (frozen batch norm, fine-tuning): PyTorch's layers
    fast(x).sum().backward()
    assert fast.conv1.weight.grad is not None


def test_native_single_images_from_many_threads():
    from concurrent.futures import ThreadPoolExecutor

    from lenet.predict.predictor import Predictor

    predictor = Predictor(build_model(MODELS["lenet5"], seed=2), [str(k) for k in range(10)],
                          backend="native")
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8).numpy()
    want = predictor.logits(images).numpy()
    with ThreadPoolExecutor(4) as pool:  # the kernel runs without the GIL
        got = list(pool.map(predictor.logits_one, list(images) * 4))
    np.testing.assert_allclose(np.stack(got), np.concatenate([want] * 4), rtol=1e-4, atol=1e-5)


def test_empty_batches_and_mismatched_norms_use_pytorchs_layers():
    config = with_settings(MODELS["lenet5-modern"], {"batch_norm": "true"})
    model = prepare_model(build_model(config, seed=0), CPU)
    assert model(torch.empty(0, 1, 28, 28)).shape == (0, 10)
    assert torch.isfinite(model.bn1.running_mean).all()  # no statistics from no images
    model = build_model(config, seed=0)
    model.bn2.eps = 1e-3  # the kernel takes one eps for both
    assert kernel_blocks(model.conv_blocks()) is None


@pytest.mark.parametrize("momenta", [(0.1, 0.1), (0.1, 0.3)], ids=["one momentum", "two"])
def test_running_statistics_update_as_each_norm_alone(momenta):
    """Both norms' running statistics, updated together, are the floats of PyTorch's
    update one norm at a time (momentum average, unbiased variance, one more batch), with
    one momentum or two."""
    norms = [nn.BatchNorm2d(6), nn.BatchNorm2d(16)]
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    alone = copy.deepcopy(norms)
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        stats = [torch.rand(c, generator=generator) for c in (6, 6, 16, 16)]
        counts = (784 * (5 + step), 100 * (5 + step))
        lenet5._update_running_stats((norms[0], norms[1]), stats, counts)
        with torch.no_grad():
            for norm, mean, var, count in zip(alone, stats[0::2], stats[1::2], counts,
                                              strict=True):
                m = norm.momentum
                norm.num_batches_tracked.add_(1)
                norm.running_mean.mul_(1 - m).add_(mean, alpha=m)
                norm.running_var.mul_(1 - m).add_(var * (count / (count - 1)), alpha=m)
    for ours, theirs in zip(norms, alone, strict=True):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_a_frozen_first_block_skips_its_gradients_and_keeps_the_others(batch_norm, bf16):
    # FreezeOut (lenet.training.freeze): with conv1 (and bn1) frozen the kernel computes
    # nothing below conv2; conv2's and bn2's gradients are those of the whole pass.
    model = blocks("relu", "max", batch_norm)
    frozen = copy.deepcopy(model)
    first = [p for layer in frozen[:2] for p in layer.parameters()]
    for p in first:
        p.requires_grad_(False)
    x, grad = torch.rand(21, 1, 28, 28), torch.randn(21, 16, 5, 5)
    norms = (1, 5) if batch_norm else None
    for net in (model, frozen):
        bn = (net[norms[0]], net[norms[1]]) if norms else (None, None)
        lenet5.conv_blocks(x, net[0], net[4], "relu", "max", *bn, bf16=bf16).backward(grad)
    assert all(p.grad is None for p in first)
    for layer in (4, 5) if batch_norm else (4,):
        for p, q in zip(model[layer].parameters(), frozen[layer].parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
