"""The fused LeNet-5 kernel (lenet/native): same numbers as PyTorch's layers, and the
fallbacks that keep everything else on PyTorch's kernels."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenet import activations
from lenet.errors import ConfigError
from lenet.fastpath import FusedSequential, fused_conv_blocks, prepare_model
from lenet.models import MODELS, build_model, with_settings
from lenet.native import build, lenet5

CPU = torch.device("cpu")


def test_the_kernel_builds_here():
    # CI and the README's set-up have a C compiler; without the kernel lenet is ~2x slower.
    assert lenet5.available()
    assert lenet5.library().lenet5_parallel() == 1


def blocks(activation: str, pool: str) -> nn.Sequential:
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    pool_layer = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), act(), pool_layer(2, 2),
                         nn.Conv2d(6, 16, 5), act(), pool_layer(2, 2))


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("batch", [1, 7, 37])
def test_forward_and_weight_gradients_match_pytorch(activation, pool, batch):
    reference = blocks(activation, pool)
    x = torch.rand(batch, 1, 28, 28)
    x[0] = 0.0  # a blank image: ReLU then max-pooling sees ties; the first maximum wins
    expected = reference(x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    want = [p.grad.clone() for p in reference.parameters()]
    reference.zero_grad()

    out = lenet5.conv_blocks(x, reference[0], reference[3], activation, pool)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.backward(grad)
    for p, w in zip(reference.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # inference: no saved maps, same output
        torch.testing.assert_close(
            lenet5.conv_blocks(x, reference[0], reference[3], activation, pool), out)


def test_results_do_not_depend_on_timing():
    reference = blocks("sigmoid", "avg")
    x = torch.rand(64, 1, 28, 28)
    runs = []
    for _ in range(3):
        reference.zero_grad()
        lenet5.conv_blocks(x, reference[0], reference[3], "sigmoid", "avg").sum().backward()
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
    assert fused_conv_blocks(list(model)) == fused
    prepare_model(model, CPU)
    assert isinstance(model, FusedSequential) == (fused is not None)


def test_fused_model_falls_back_where_the_kernel_cannot_serve():
    plain = build_model(MODELS["lenet5"], seed=0)
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    assert isinstance(fast, FusedSequential)
    x = torch.rand(5, 1, 28, 28)

    # activation capture hooks the layers inside the fused blocks: they must fire
    out, acts = activations.capture(fast, x)
    ref_out, ref_acts = activations.capture(plain, x)
    torch.testing.assert_close(out, ref_out)
    for name in acts:
        torch.testing.assert_close(acts[name], ref_acts[name])

    # gradients with respect to the input (saliency) need PyTorch's layers
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for model, xi in zip((plain, fast), xs, strict=True):
        model(xi).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)

    # bf16 autocast: the user asked for bf16 arithmetic, so PyTorch's kernels run it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16

    # other input sizes and dtypes fail (or not) as the layers would
    with pytest.raises(RuntimeError):
        fast(torch.rand(2, 1, 32, 32))
    double = copy.deepcopy(fast).double()  # float64 weights: the layers, in float64
    torch.testing.assert_close(double(x.double()).float(), plain(x), rtol=1e-5, atol=1e-6)


def test_fused_model_trains_like_the_plain_one():
    plain = build_model(MODELS["lenet5"], seed=0)
    fast = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    for model in (plain, fast):
        optim = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            optim.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optim.step()
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_the_books_own_classes_run_fused():
    from lenet import d2l

    model = d2l.LeNet(lr=0.1)
    model.apply_init([torch.rand(2, 1, 28, 28)], d2l.init_cnn)
    prepare_model(model, CPU)
    assert isinstance(model.net, FusedSequential)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path))
    path = build.build("lenet5")
    assert path.parent == tmp_path / "native" and path.exists()
    stamp = path.stat().st_mtime_ns
    assert build.build("lenet5") == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_no_compiler_means_pytorchs_kernels_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.raises(build.BuildError, match=r"could not compile lenet5\.c"):
        build.build("lenet5")
    build.load.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert build.load("lenet5") is None
        assert any("using PyTorch's" in str(w.message) for w in caught)
        monkeypatch.delenv("CC")
        monkeypatch.setenv("LENET_NATIVE", "0")
        build.load.cache_clear()
        assert build.load("lenet5") is None
    finally:
        build.load.cache_clear()


@pytest.mark.parametrize("name,settings,native", [
    ("lenet5", {}, True), ("lenet5-modern", {}, True), ("lenet5", {"dense": "200"}, True),
    ("lenet5", {"dense": ""}, True), ("lenet5", {"dropout": "0.5"}, True),
    ("lenet5-modern", {"batch_norm": "true"}, True), ("lenet5", {"batch_norm": "true"}, True),
    ("lenet5", {"channels": "6,32"}, False), ("lenet5", {"activation": "tanh"}, False)])
def test_native_single_image_path_matches_pytorch(name, settings, native):
    from lenet.inference import Predictor

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


@pytest.mark.parametrize("name", ["lenet5", "lenet5-modern"])
def test_batch_norm_blocks_train_like_pytorchs(name):
    config = with_settings(MODELS[name], {"batch_norm": "true"})
    plain = build_model(config, seed=0)
    fast = prepare_model(build_model(config, seed=0), CPU)
    assert isinstance(fast, FusedSequential) and fast.fused[2]
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 10
    for model in (plain, fast):
        optim = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        for _ in range(4):
            optim.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optim.step()
    # weights, biases, batch norm parameters and running statistics all follow PyTorch
    for (key, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    plain.eval()
    fast.eval()
    with torch.no_grad():  # eval mode: the running statistics, fused
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    # eval mode with gradients (frozen batch norm, fine-tuning): PyTorch's layers
    fast(x).sum().backward()
    assert fast.conv1.weight.grad is not None


def test_native_single_images_from_many_threads():
    from concurrent.futures import ThreadPoolExecutor

    from lenet.inference import Predictor

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
    assert fused_conv_blocks(list(model)) is None
