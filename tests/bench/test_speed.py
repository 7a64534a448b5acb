"""The fast paths: same results as the plain ones, and the benchmark's measurements."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, write_dataset

from lenet.bench import measure
from lenet.data import sources
from lenet.errors import ConfigError
from lenet.models.config import MODELS, ModelConfig
from lenet.models.network import LeNet, build_model
from lenet.models.settings import with_settings
from lenet.native.fastpath import AvgPool2d, kernel_path, prepare_model
from lenet.predict.predictor import Predictor
from lenet.run import shortcuts as runner
from lenet.training.config import RECIPES, TrainConfig


@pytest.mark.parametrize("settings", [{}, {"channels": "8,16"}], ids=["fused", "nhwc"])
def test_fast_path_computes_what_the_plain_model_computes(settings):
    config = with_settings(MODELS["lenet5"], settings)
    plain = build_model(config, seed=0)
    fast = prepare_model(build_model(config, seed=0), torch.device("cpu"))
    assert isinstance(fast.pool1, AvgPool2d) and repr(fast.pool1) == repr(plain.pool1)
    if settings:  # not LeNet-5's shapes: PyTorch's kernels, channels-last
        assert kernel_path(fast) is None
        assert fast.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    else:
        assert kernel_path(fast) is not None and type(fast) is LeNet
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-6)
    for model in (plain, fast):
        F.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pools_that_are_not_2x2_stride_2_are_left_alone():
    model = build_model(ModelConfig(pool_size=3, kernel_sizes=(5, 3), paddings=(2, 0)))
    prepare_model(model, torch.device("cpu"))
    assert type(model.pool1) is torch.nn.AvgPool2d
    assert AvgPool2d.can_replace(torch.nn.AvgPool2d(2, 2))
    assert not AvgPool2d.can_replace(torch.nn.AvgPool2d(2, 1))
    assert not AvgPool2d.can_replace(torch.nn.AvgPool2d(2, 2, padding=1))


@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_and_torch_predictors_agree(name):
    pytest.importorskip("onnxruntime")
    model = build_model(MODELS[name], seed=0)
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    torch_p = Predictor(model, [str(i) for i in range(10)], backend="torch")
    onnx_p = Predictor(model, [str(i) for i in range(10)], backend="onnxruntime")
    a, b = torch_p.logits(images), onnx_p.logits(images)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for p in (torch_p, onnx_p):
        np.testing.assert_allclose(p.logits_one(images[7]), a[7].numpy(), rtol=1e-4, atol=1e-5)
    hybrid = Predictor(model, list("abcdefghij"), backend="hybrid")
    np.testing.assert_allclose(hybrid.logits_one(images[3]), a[3].numpy(), rtol=1e-4, atol=1e-5)
    auto = Predictor(model, list("abcdefghij"))
    assert auto.backend == ("native" if name.startswith("lenet5") else "hybrid")
    np.testing.assert_allclose(auto.logits_one(images[3]), a[3].numpy(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(auto.logits(images), a, rtol=1e-4, atol=1e-5)
    top = onnx_p.predict(images[:2], top_k=10)[0]
    assert sum(p for _, p in top.top) == pytest.approx(1, abs=1e-5)


@pytest.mark.slow
def test_bf16_training_learns(synthetic, tmp_path):
    result = runner.train(TrainConfig(dataset="synthetic", model="lenet5-modern", epochs=3,
                                      batch_size=20, optimizer="adam", lr=0.01, device="cpu",
                                      precision="bf16", out_dir=str(tmp_path)), console=QUIET)
    assert result.history[-1]["test_acc"] > 0.5


@pytest.mark.slow
def test_target_accuracy_stops_early(synthetic, tmp_path):
    result = runner.train(TrainConfig(dataset="synthetic", model="lenet5-modern", epochs=30,
                                      batch_size=20, optimizer="adam", lr=0.01, device="cpu",
                                      target_accuracy=0.6, out_dir=str(tmp_path)),
                          console=QUIET)
    assert result.completed and len(result.history) < 30
    assert result.history[-1]["test_acc"] >= 0.6
    assert all(r["test_acc"] < 0.6 for r in result.history[:-1])
    assert result.history[-1]["elapsed_seconds"] >= result.history[-1]["wall_seconds"]


def test_recipes():
    modern = TrainConfig.from_recipe("modern", epochs=3)
    assert modern.model == "lenet5-modern" and modern.momentum == 0.9 and modern.epochs == 3
    assert modern.recipe == "modern"
    assert TrainConfig.from_recipe() == TrainConfig()
    for name in RECIPES:
        TrainConfig.from_recipe(name)  # every shipped recipe is valid
    with pytest.raises(ConfigError, match="unknown recipe"):
        TrainConfig.from_recipe("fastest")


@pytest.mark.slow
def test_benchmark_measurements_on_small_data(tmp_path, isolated_sources):
    write_dataset(tmp_path / "d", n_train=600, n_test=100)
    data = sources.load(str(tmp_path / "d"))
    assert measure.matmul_gflops(torch.float32, n=128, seconds=0.05) > 0
    config = TrainConfig(dataset=str(tmp_path / "d"), batch_size=32, device="cpu")
    assert measure.steps_per_second(data, config, steps=5) > 0
    assert measure.steps_per_second(data, config.replace(precision="fp16"), steps=5) > 0
    speed = measure.inference_speed(Predictor(build_model(MODELS["lenet5"]), list("abcdefghij")),
                                    data.test.images, calls=20, batch=64)
    assert 0 < speed.median_ms <= speed.p99_ms and speed.batch_images_per_sec > 0
    assert measure.TRAIN_FLOP_PER_EXAMPLE == 2_263_920


@pytest.mark.slow
def test_time_to_accuracy_watches_the_epoch_table(tmp_path, isolated_sources):
    write_dataset(tmp_path / "d", n_train=400, n_test=100)
    reached = measure.time_to_accuracy(["--dataset", str(tmp_path / "d"), "--model",
                                        "lenet5-modern", "--optimizer", "adam", "--lr", "0.01",
                                        "--batch-size", "20", "--epochs", "8"], target=0.5)
    assert reached.accuracy >= 0.5 and 1 <= reached.epochs < 8
    assert 0 < reached.seconds <= reached.command_seconds  # the printed row was seen
