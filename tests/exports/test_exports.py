"""`lenet export --format keras|flax`: the LeNet-5 family rebuilt in Keras and Flax computes
PyTorch's logits (random weights and inputs here; a trained run on the whole real test split
through the CLI, as the ONNX export is checked)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import StopAfter, require

from lenet.cli import main
from lenet.exports.agreement import compare
from lenet.exports.plan import nhwc
from lenet.models.config import MODELS, ModelConfig
from lenet.models.network import build_model
from lenet.run import shortcuts as runner
from lenet.run.console import Console
from lenet.training.config import TrainConfig

FAMILY = {
    "lenet5": MODELS["lenet5"],
    "lenet5-modern": MODELS["lenet5-modern"],
    # batch norm folded, 3x3 kernels padded by 1, dropout left out at inference
    "lenet-100k": MODELS["lenet-100k"],
    "tanh-3-blocks": ModelConfig(channels=(4, 8, 8), kernel_sizes=(5, 3, 3), paddings=(2, 1, 1),
                                 activation="tanh", dense=(32,)),
    "gelu-max": ModelConfig(activation="gelu", pool="max", dense=(64, 32)),
}


def trained_like(config: ModelConfig) -> torch.nn.Module:
    """A model with random weights and, where it has batch norm, random running statistics."""
    model = build_model(config, seed=0)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def inputs(config: ModelConfig, n: int = 64) -> torch.Tensor:
    return torch.rand((n, config.in_channels, *config.input_size),
                      generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_keras_computes_pytorchs_logits(name):
    require("tensorflow")
    from lenet.exports.to_keras import build_keras

    model = trained_like(FAMILY[name])
    x = inputs(model.config)
    with torch.no_grad():
        expected = model(x).numpy()
    got = np.asarray(build_keras(model)(nhwc(x), training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_flax_files_compute_pytorchs_logits(name, tmp_path):
    require("jax")
    from lenet.exports import to_flax

    model = trained_like(FAMILY[name])
    classes = [f"c{k}" for k in range(model.config.num_classes)]
    path, module_path = to_flax.export_flax(model, classes, tmp_path / "m.safetensors")
    assert module_path == tmp_path / "lenet_flax.py"
    x = inputs(model.config)
    with torch.no_grad():
        expected = model(x).numpy()
    got = to_flax.flax_logits(path, module_path, nhwc(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)
    assert to_flax.load_written_module(module_path).classes(path) == classes


def test_keras_file_round_trip(tmp_path):
    require("tensorflow")
    from lenet.exports.to_keras import export_keras, verify_keras

    model = trained_like(FAMILY["lenet5"])
    x = inputs(model.config)
    with torch.no_grad():
        expected = model(x).numpy()
    path = export_keras(model, tmp_path / "m.keras")
    labels = expected.argmax(1)
    v = verify_keras(path, nhwc(x), expected, labels)
    assert v.agreement == 1.0 and v.max_abs_error < 1e-4 and v.torch_accuracy == 1.0


def test_agreement_counts_disagreements():
    ours = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    theirs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    v = compare(ours, theirs, np.array([0, 1, 0]))
    assert v.examples == 3 and v.agreement == pytest.approx(2 / 3)
    assert v.max_abs_error == 1.0 and v.exported_accuracy == pytest.approx(2 / 3)
    assert v.torch_accuracy == 1.0
    with pytest.raises(ValueError):
        compare(ours[:2], theirs, np.array([0, 1, 0]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The book's LeNet-5 after 300 steps of SGD with momentum on the real Fashion-MNIST."""
    out = tmp_path_factory.mktemp("runs")
    config = TrainConfig(model="lenet5", epochs=1, lr=0.05, momentum=0.9, device="cpu",
                         out_dir=str(out), name="small", val_split=None)
    runner.train(config, console=Console(progress=False), stop=StopAfter(300))
    return out / "small"


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("fmt, file, extra", [("keras", "m.keras", "tensorflow"),
                                              ("flax", "m.safetensors", "jax")])
def test_export_agrees_on_the_whole_test_split(trained, tmp_path, capsys, fmt, file, extra):
    require(extra)
    code = main(["export", str(trained), "--format", fmt, "--out", str(tmp_path / file)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verified on 10,000 test images: predictions agree on 100.00%" in out, out
    assert (tmp_path / file).stat().st_size > 200_000  # 61,706 float32 parameters and more


def test_framework_exports_need_a_destination(capsys):
    code = main(["export", "nowhere", "--format", "keras"])
    assert code != 0 and "--out FILE" in capsys.readouterr().err


def test_every_config_field_is_either_exported_or_inference_free():
    # A new ModelConfig field must be handled by exports/plan.py (or listed here as one
    # that does not change inference): otherwise an export would silently drop it.
    handled = {"channels", "kernel_sizes", "paddings", "activation", "pool", "pool_size",
               "dense", "num_classes", "in_channels", "input_size", "batch_norm"}
    inference_free = {"dropout", "init"}
    assert {f.name for f in dataclasses.fields(ModelConfig)} == handled | inference_free
