"""The fused kernel's bfloat16 products (`conv_precision="bf16"`, lenet5.c's AVX512-BF16
path): each convolution multiplies bfloat16 roundings of its operands and sums in float32,
forward and backward. Checked against a float64 network whose convolutions round the same
operands, on CPUs that have the instructions; elsewhere the setting must change nothing.

Every test here runs with LENET_NATIVE=1 (the kernel, no guard).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_native import blocks  # the two conv blocks as PyTorch's layers
from torch import nn

from lenet.errors import ConfigError
from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.models.settings import with_settings
from lenet.native import lenet5
from lenet.native.fastpath import kernel_path, prepare_model, torch_conv_precision
from lenet.training.config import TrainConfig

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not lenet5.bf16_dot(),
                                reason="this CPU (or build) has no AVX512-BF16")


@pytest.fixture(autouse=True)
def kernel_forced(monkeypatch):
    monkeypatch.setenv("LENET_NATIVE", "1")


def rounded(t: torch.Tensor) -> torch.Tensor:
    """t's values rounded to bfloat16 (from float32, as the kernel rounds its float32 maps)."""
    return t.float().to(torch.bfloat16).to(t.dtype)


class RoundedConv(torch.autograd.Function):
    """conv2d whose products take bfloat16 roundings of the input, the weight and (backward)
    the output's gradient; the bias and its gradient are not rounded."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        x, weight = rounded(x), rounded(weight)
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = rounded(grad)
        return (torch.nn.grad.conv2d_input(x.shape, weight, g, padding=ctx.padding),
                torch.nn.grad.conv2d_weight(x, weight.shape, g, padding=ctx.padding),
                grad.sum((0, 2, 3)), None)


def rounded_reference(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`model` run layer by layer, its convolutions through RoundedConv."""
    h = x
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            h = RoundedConv.apply(h, layer.weight, layer.bias, layer.padding)
        else:
            h = layer(h)
    return h


def fused(model: nn.Sequential, x: torch.Tensor, activation: str, pool: str, batch_norm: bool,
          bf16: bool) -> torch.Tensor:
    norms = (model[1], model[5]) if batch_norm else (None, None)
    return lenet5.conv_blocks(x, model[0], model[4], activation, pool, *norms, bf16=bf16)


def errors(model: nn.Sequential, out: torch.Tensor, truth: torch.Tensor,
           exact: nn.Sequential, batch_norm: bool) -> dict[str, float]:
    """Largest error of the output and of each gradient against `exact`'s, relative to the
    largest value of its kind (gradients: of all parameters, as behind a batch norm the
    conv biases' true gradients are 0)."""
    found = {"forward": ((out.double() - truth).abs().max() / truth.abs().max()).item()}
    largest = max(p.grad.abs().max().item() for p in exact.parameters())
    for (name, p), q in zip(model.named_parameters(), exact.parameters(), strict=True):
        found[name] = ((p.grad.double() - q.grad).abs().max() / largest).item()
    return found


@needs_bf16
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("activation,pool", [("sigmoid", "avg"), ("relu", "max")])
@pytest.mark.parametrize("batch", [1, 37])
def test_bf16_products_are_the_rounded_operands(activation, pool, batch_norm, batch):
    reference = blocks(activation, pool, batch_norm)
    exact = copy.deepcopy(reference).double()
    torch.manual_seed(batch)
    x = torch.rand(batch, 1, 28, 28)
    if batch > 1:
        x[0] = 0.0  # a blank image: ties for max pooling
    grad = torch.randn(batch, 16, 5, 5)
    truth = rounded_reference(exact, x.double())
    truth.backward(grad.double())

    found = {}
    for bf16 in (False, True):
        model = copy.deepcopy(reference)
        out = fused(model, x, activation, pool, batch_norm, bf16)
        out.backward(grad)
        found[bf16] = errors(model, out, truth, exact, batch_norm)
    for what, err in found[True].items():
        # float32 sums in another order, and the rare operand that float32 and float64
        # round to neighbouring bfloat16s: far below what float32 products leave
        assert err <= 2e-3, f"{what}: {err:.3g} from the rounded float64 reference"
        if what not in ("forward", "0.weight", "4.weight"):
            continue  # (biases and norms: no rounded product of their own to tell apart)
        assert err <= 0.2 * found[False][what], (
            f"{what}: bf16 {err:.3g}, float32 products {found[False][what]:.3g}: the kernel "
            "does not round as the reference does")


@needs_bf16
def test_bf16_forward_without_saving_equals_the_training_forward():
    model = blocks("relu", "max", True).eval()
    x = torch.rand(19, 1, 28, 28)
    with torch.no_grad():
        a = fused(model, x, "relu", "max", True, True)
    b = fused(model, x, "relu", "max", True, True)  # no parameter needs a gradient: same
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, fused(model, x, "relu", "max", True, False))


def test_conv_precision_reaches_the_kernel_where_the_cpu_has_it():
    config = with_settings(MODELS["lenet5-modern"], {"batch_norm": "true"})
    x = torch.rand(16, 1, 28, 28)
    outs = {}
    for precision in ("ieee", "bf16"):
        model = prepare_model(build_model(config, seed=0), CPU, conv_precision=precision)
        path = kernel_path(model)
        assert path is not None
        assert path.bf16 == (precision == "bf16" and lenet5.bf16_dot())
        assert path.products().startswith("training steps: bfloat16" if path.bf16 else "float32")
        outs[precision] = model(x)
    # where the CPU lacks the instructions, bf16 is allowed but not used: float32, unchanged
    assert torch.equal(outs["ieee"], outs["bf16"]) != lenet5.bf16_dot()
    # evaluation and inference multiply in float32 (a run's figures are what serving gets)
    with torch.no_grad():
        same = [prepare_model(build_model(config, seed=0), CPU, conv_precision=precision)(x)
                for precision in ("ieee", "bf16")]
    assert torch.equal(*same)
    with pytest.raises(ConfigError, match="convolution precision"):
        prepare_model(build_model(config, seed=0), CPU, conv_precision="fp8")


def test_pytorchs_own_setting_is_the_default():
    conv = torch.backends.mkldnn.conv
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "bf16"
        assert torch_conv_precision() == "bf16"
        model = prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)
        assert kernel_path(model).bf16 == lenet5.bf16_dot()
        conv.fp32_precision = "ieee"
        assert torch_conv_precision() == "ieee"
        assert not kernel_path(prepare_model(build_model(MODELS["lenet5"], seed=0), CPU)).bf16
    finally:
        conv.fp32_precision = before


def test_train_config_checks_and_keeps_it():
    assert TrainConfig().conv_precision == "ieee"
    with pytest.raises(ConfigError, match="convolution precision"):
        TrainConfig(conv_precision="fp16")
    config = TrainConfig(recipe="speed-90")
    back = TrainConfig.from_dict(config.to_dict())
    assert back.conv_precision == config.conv_precision
    old = config.to_dict()
    del old["conv_precision"], old["freeze_first_block"]  # a run from before them:
    back = TrainConfig.from_dict(old)  # float32 products, nothing frozen, as it trained
    assert (back.conv_precision, back.freeze_first_block) == ("ieee", None)


@needs_bf16
def test_bf16_trains_a_model_as_well():
    config = with_settings(MODELS["lenet5-modern"], {"batch_norm": "true"})
    torch.manual_seed(0)
    x = torch.rand(256, 1, 28, 28)
    y = (x.mean((1, 2, 3)) * 40).long() % 10  # a learnable rule of the pixels
    losses = {}
    for precision in ("ieee", "bf16"):
        model = prepare_model(build_model(config, seed=0), CPU, conv_precision=precision)
        optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(30):
            optim.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optim.step()
        losses[precision] = loss.item()
    assert losses["bf16"] < 0.8 * F.cross_entropy(torch.zeros(1, 10), y[:1]).item()
    assert abs(losses["bf16"] - losses["ieee"]) < 0.1 * losses["ieee"] + 0.02
