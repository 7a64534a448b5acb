"""Unit tests for evaluation, image preparation, OOD scores and activation capture."""

import gzip
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lenet.data import images
from lenet.models.config import MODELS, ModelConfig
from lenet.models.network import build_model
from lenet.ood.exercise import saturation, score
from lenet.predict.activations import capture
from lenet.predict.evaluation import Evaluation, format_report, plot_confusion


def test_per_class_metrics_and_confused_pairs(tmp_path):
    confusion = np.array([[8, 2, 0], [1, 9, 0], [0, 5, 5]])
    ev = Evaluation("test", ["a", "b", "c"], 0.5, 22 / 30, confusion)
    rows = {r["class"]: r for r in ev.per_class()}
    assert rows["b"]["precision"] == pytest.approx(9 / 16)
    assert rows["b"]["recall"] == pytest.approx(0.9)
    assert rows["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert ev.confused_pairs(2) == [("c", "b", 5), ("a", "b", 2)]
    assert ev.examples == 30
    assert "most confused" in format_report(ev)
    png = plot_confusion(ev, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def write(tmp_path, name, array, **kwargs):
    path = tmp_path / name
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_light_background_is_inverted_and_object_fills_the_frame(tmp_path):
    canvas = np.full((100, 300), 255, np.uint8)
    canvas[40:60, 50:250] = 0  # a dark 20x200 bar on white
    prepared = images.prepare(write(tmp_path, "bar.png", canvas))
    assert prepared.inverted and prepared.pixels.shape == (28, 28)
    bright_rows = np.flatnonzero(prepared.pixels.max(axis=1) > 128)
    bright_cols = np.flatnonzero(prepared.pixels.max(axis=0) > 128)
    assert len(bright_cols) >= 26  # the long side spans the frame
    assert 2 <= len(bright_rows) <= 5  # aspect ratio kept: 200:20 -> about 28:3
    assert prepared.pixels[0].max() < 30  # background is dark


def test_invert_can_be_overridden(tmp_path):
    canvas = np.zeros((50, 50), np.uint8)
    canvas[10:40, 10:40] = 200
    path = write(tmp_path, "square.png", canvas)
    assert not images.prepare(path).inverted
    assert images.prepare(path, invert=True).inverted


def test_transparency_rgb_and_palette_images(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (0, 0, 0, 255)  # opaque black square on transparent
    assert images.prepare(write(tmp_path, "a.png", rgba)).inverted  # composited on white
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[5:35, 5:55] = (200, 100, 50)
    assert images.prepare(write(tmp_path, "b.jpg", rgb)).pixels.shape == (28, 28)
    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "c.gif")
    assert images.prepare(tmp_path / "c.gif").pixels.dtype == np.uint8


@pytest.mark.parametrize("name, content, message", [
    ("empty.png", b"", "empty file"),
    ("notes.txt", b"not an image at all\n", "not an image"),
    ("fake.png", gzip.compress(b"x" * 100), "not an image"),
])
def test_unusable_files_give_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(images.ImageError, match=message) as info:
        images.prepare(path)
    assert str(path) in str(info.value)


def test_truncated_png(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(
        buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:3000])
    with pytest.raises(images.ImageError, match="truncated or corrupt"):
        images.prepare(path)


def test_huge_image_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    path = write(tmp_path, "big.png", np.zeros((100, 100), np.uint8))
    with pytest.raises(images.ImageError, match=r"too large \(100x100"):
        images.prepare(path)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (0, 255, 128)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    prepared = images.prepare(tmp_path / "a.gif")
    assert prepared.notes == ["animated image with 3 frames: using the first"]


def test_ood_scores():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    msp = score(logits, "msp")
    assert msp[0] > 0.99 and msp[1] < 0.4
    energy = score(logits, "energy")
    assert energy[0] > energy[1]
    assert saturation(torch.tensor([0.01, 0.5, 0.99, 0.97]), "sigmoid") == 0.75
    assert saturation(torch.tensor([0.0, 0.0, 1.0, 2.0]), "relu") == 0.5


def test_capture_returns_named_activations_and_removes_hooks():
    model = build_model(MODELS["lenet5"], seed=0).eval()
    out, acts = capture(model, torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert acts["act1"].shape == (2, 6, 28, 28) and acts["act2"].shape == (2, 16, 10, 10)
    assert float(acts["act1"].min()) >= 0 and float(acts["act1"].max()) <= 1  # sigmoid
    recorded = dict(acts)
    model(torch.rand(3, 1, 28, 28))  # the hooks are gone: a later forward records nothing
    assert acts.keys() == recorded.keys() and all(acts[k] is recorded[k] for k in acts)
    bn = build_model(ModelConfig(batch_norm=True), seed=0).eval()
    assert capture(bn, torch.rand(1, 1, 28, 28))[1]["act2"].shape == (1, 16, 10, 10)


@pytest.mark.parametrize("name, kernel_batch", [("lenet5", True), ("lenet-100k", False)])
def test_predictor_batches_by_path_and_test_time_views_agree(name, kernel_batch):
    from lenet.data.loader import tta_mean as tta_logits
    from lenet.native.fastpath import evaluation_batch, kernel_path
    from lenet.predict.evaluation import evaluate_split
    from lenet.predict.predictor import Predictor

    model = build_model(MODELS[name], seed=3).eval()
    predictor = Predictor(model, [str(k) for k in range(10)], backend="torch")
    # the kernel takes big chunks, PyTorch's convolutions chunks that stay in cache
    fused = kernel_path(predictor._fast) is not None
    assert fused == (kernel_batch and fused)  # lenet-100k is never the kernel's
    assert predictor.batch_size == (1024 if fused else 256)
    on_gpu = evaluation_batch(model, torch.device("cuda"))  # only the device is read
    assert on_gpu == 1024
    pixels = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8).numpy()
    whole = predictor.logits(pixels)
    torch.testing.assert_close(predictor.logits(pixels, batch_size=7), whole,
                               rtol=1e-4, atol=1e-5)
    labels = np.arange(64) % 10
    x = torch.from_numpy(pixels)[:, None].float() / 255
    with torch.no_grad():
        for tta in (None, "flip", "flip+shift"):  # lenet evaluate's views are training's
            got = evaluate_split(predictor, pixels, labels, tta=tta)
            want = tta_logits(model, x, tta)
            assert got.accuracy == pytest.approx(
                float((want.argmax(1).numpy() == labels).mean()), abs=1 / 64)
