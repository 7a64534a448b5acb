"""Out-of-distribution detectors, their fitting, calibration, storage and benchmark, on
synthetic features and small models (no dataset needed)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lenet.errors import LenetError
from lenet.models.config import MODELS, ModelConfig
from lenet.models.network import build_model
from lenet.ood import benchmark, calibration, fitted
from lenet.ood.detectors import KNN, MSP, Energy, Inputs, Mahalanobis, Pixels, make_detectors
from lenet.ood.features import FeatureExtractor
from lenet.ood.probes import ProbeSet, glyph_sets, noise_sets
from lenet.predict.predictor import Predictor

MEANS = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])


def clusters(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes in 4-d, well apart: (features, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return (MEANS[labels] + rng.normal(0, 0.5, (n, 4))).astype(np.float32), labels


def fashion_like(n: int, seed: int = 0) -> np.ndarray:
    """Black images with a bright blurred blob: in the range the pixel check learns."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(3, 8, size=2)
        h, w = rng.integers(12, 18), rng.integers(8, 16)
        images[i, r:r + h, c:c + w] = rng.integers(120, 255)
    return images


def inputs(features: np.ndarray, pixels: np.ndarray | None = None) -> Inputs:
    n = len(features)
    pixels = fashion_like(n) if pixels is None else pixels
    return Inputs(features, np.zeros((n, 3), np.float32), pixels)


def test_mahalanobis_scores_points_far_from_every_class_mean_worse():
    f, y = clusters()
    det = Mahalanobis().fit(inputs(f), y)
    probe = np.array([MEANS[0], MEANS[2], MEANS[0] + [0, 0, 0, 1.5], [5.0, 5.0, 5.0, 5.0],
                      [-20.0, 0, 0, 0]], np.float32)
    s = det.score(inputs(probe))
    assert s[0] == pytest.approx(0, abs=0.1) and s[1] == pytest.approx(0, abs=0.1)
    assert s[0] > s[2] > s[3] > s[4]  # further from every mean, lower
    # The distance is a shared-covariance Mahalanobis one: check against the formula.
    cov = np.cov((f - MEANS[y]).T, bias=True)
    d = probe[3] - MEANS
    expect = min(float(v @ np.linalg.inv(cov) @ v) for v in d)
    assert -s[3] == pytest.approx(expect, rel=1e-3)


def test_knn_scores_points_away_from_the_training_features_worse_and_ignores_scale():
    f, y = clusters()
    det = KNN(k=5, bank=300).fit(inputs(f), y)
    assert det.bank.shape == (300, 4)
    probe = np.array([MEANS[1], MEANS[1] + [2.0, 0, 0, 0], [0, 0, 0, 5.0]], np.float32)
    s = det.score(inputs(probe))
    assert s[0] > s[1] > s[2]
    assert s[0] > -0.2 and s[2] < -1.0  # distances between unit vectors: 0 to 2
    np.testing.assert_allclose(det.score(inputs(probe * 10)), s, atol=1e-5)
    with pytest.raises(LenetError, match="fewer than k"):
        KNN(k=50, bank=10).fit(inputs(f), y)


def test_logit_scores():
    logits = np.array([[10.0, 0, 0], [0.1, 0, 0]], np.float32)
    x = Inputs(np.zeros((2, 4), np.float32), logits, fashion_like(2))
    msp, energy = MSP().score(x), Energy().score(x)
    np.testing.assert_allclose(msp, torch.softmax(torch.tensor(logits), 1).max(1).values,
                               rtol=1e-6)
    np.testing.assert_allclose(energy, torch.logsumexp(torch.tensor(logits), 1), rtol=1e-6)
    assert msp[0] > 0.99 and msp[1] < 0.4


def test_pixel_check_flags_a_photo_padded_with_black_bars():
    train = fashion_like(2000)
    det = Pixels().fit(inputs(np.zeros((2000, 4), np.float32), train), np.zeros(2000, int))
    photo = np.random.default_rng(2).integers(60, 200, (28, 28)).astype(np.uint8)
    photo[:6] = photo[-6:] = 0  # a landscape photo made square: bars above and below
    assert det.score(inputs(np.zeros((2, 4), np.float32), np.stack([photo, photo.T])))[0] < 0
    assert det.score(inputs(np.zeros((1, 4), np.float32), photo.T[None]))[0] < 0


def test_pixel_check_flags_statistics_no_training_image_has():
    train = fashion_like(2000)
    det = Pixels().fit(inputs(np.zeros((2000, 4), np.float32), train), np.zeros(2000, int))
    rng = np.random.default_rng(1)
    odd = np.stack([rng.integers(0, 256, (28, 28), dtype=np.uint8),  # noise
                    np.full((28, 28), 128, np.uint8),  # constant grey
                    np.zeros((28, 28), np.uint8)])  # blank
    assert (det.score(inputs(np.zeros((3, 4), np.float32), odd)) < 0).all()
    familiar = det.score(inputs(np.zeros((200, 4), np.float32), fashion_like(200, seed=5)))
    assert np.mean(familiar == 0) > 0.95


def test_combined_and_every_detector_rank_far_points_below_training_like_ones():
    f, y = clusters(seed=0)
    detectors = make_detectors(knn_k=5, knn_bank=300)
    for d in detectors.values():
        d.fit(inputs(f), y)
    near, _ = clusters(60, seed=1)
    far = np.full((5, 4), -8.0, np.float32)
    for name in ("mahalanobis", "knn", "combined"):
        d = detectors[name]
        assert d.score(inputs(near)).min() > d.score(inputs(far)).max(), name
    noise = np.random.default_rng(2).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    combined = detectors["combined"]
    assert combined.score(inputs(near, noise)).max() < combined.score(inputs(near)).min()


def test_auroc_and_fpr_at_tpr():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    brute = np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :])
    assert benchmark.auroc(a, b) == pytest.approx(brute)
    assert benchmark.auroc(np.ones(5), np.zeros(5)) == 1.0
    assert benchmark.auroc(np.ones(5), np.ones(3)) == 0.5  # all tied
    in_scores = np.arange(100.0)  # threshold at 95% TPR: 5
    assert benchmark.fpr_at_tpr(in_scores, np.array([4.0, 5.0, 50.0, -1.0])) == 0.5
    fpr, tpr = benchmark.roc_curve(np.array([3.0, 2.0]), np.array([1.0, 2.5]))
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0 and (np.diff(fpr) >= 0).all()


def test_calibration_images_are_training_images_never_fitted_on():
    fit, cal, held = calibration.choose_images(10_000, 0, seed=0, n_fit=3000, n_calibration=800)
    assert not held and len(cal) == 800 and len(fit) == 3000
    assert not set(fit) & set(cal) and max(fit.max(), cal.max()) < 10_000
    fit2, cal2, held2 = calibration.choose_images(10_000, 500, seed=3, n_fit=3000)
    assert held2 and np.array_equal(cal2, calibration.calibration_holdout(10_000, 500, 3))
    assert not set(fit2) & set(cal2)
    assert np.array_equal(cal2, calibration.calibration_holdout(10_000, 500, 3))  # seeded
    assert len(calibration.calibration_holdout(100, 0, 0)) == 0
    with pytest.raises(LenetError, match="cannot keep 100 of 100"):
        calibration.calibration_holdout(100, 100, 0)


class FakeExtractor:
    """Features: 16 pooled pixel means; logits: their first 10 (stands in for a model)."""

    def batch(self, images):
        x = np.asarray(images, np.float32).reshape(len(images), 4, 7, 4, 7).mean((2, 4)) / 255
        features = x.reshape(len(images), 16)
        return features, features[:, :10] * 5


def test_fit_save_load_round_trip_and_version_check(tmp_path):
    images = fashion_like(3000)
    labels = np.arange(3000) % 10
    g = calibration.fit(FakeExtractor(), images, labels, holdout=400, seed=1, n_fit=1500)
    assert g.record["calibration"]["held_out_of_training"] is True
    assert set(g.indices["calibration"]) == set(calibration.calibration_holdout(3000, 400, 1))
    g.save(tmp_path)
    loaded = fitted.FittedDetectors.load(tmp_path)
    probe = calibration.inputs_of(FakeExtractor(), fashion_like(50, seed=9))
    for name in g.names:
        np.testing.assert_allclose(loaded.scores(probe, [name])[name],
                                   g.scores(probe, [name])[name], rtol=1e-6)
        assert loaded.threshold(name) == pytest.approx(g.threshold(name))
    assert loaded.default == fitted.DEFAULT and loaded.tpr == 0.95
    assert np.array_equal(loaded.indices["fit"], g.indices["fit"])
    verdicts = loaded.assess(probe)
    assert verdicts[0].detector == fitted.DEFAULT and np.mean([v.out_of_distribution
                                                             for v in verdicts]) < 0.5
    assert loaded.threshold("knn", 0.5) > loaded.threshold("knn", 0.99)
    meta = json.loads((tmp_path / fitted.META).read_text())
    meta["version"] = fitted.VERSION + 1
    (tmp_path / fitted.META).write_text(json.dumps(meta))
    with pytest.raises(LenetError, match=f"format version {fitted.VERSION + 1}, this lenet reads "
                                         f"version {fitted.VERSION}: upgrade lenet"):
        fitted.FittedDetectors.load(tmp_path)
    meta["version"] = fitted.VERSION - 1  # older: missing, so refitted where lenet can
    (tmp_path / fitted.META).write_text(json.dumps(meta))
    with pytest.raises(fitted.MissingDetectors, match=r"older format version.*lenet ood fit"):
        fitted.FittedDetectors.load(tmp_path)
    with pytest.raises(fitted.MissingDetectors, match="lenet ood fit"):
        fitted.FittedDetectors.load(tmp_path / "nowhere")
    with pytest.raises(LenetError, match="unknown OOD detector 'odin'"):
        loaded.threshold("odin")


@pytest.mark.parametrize("settings", [{}, {"batch_norm": True}, {"dropout": 0.3}])
@pytest.mark.parametrize("backend", ["native", "torch",
                                     pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_features_of_one_image_match_the_batch_path(backend, settings):
    config = ModelConfig(**{**MODELS["lenet5-modern"].to_dict(), **settings})
    model = build_model(config, seed=0)
    if settings.get("batch_norm"):  # running statistics other than the initial ones
        model.train()
        with torch.no_grad():
            model(torch.rand(64, 1, 28, 28))
    model.eval()
    try:
        predictor = Predictor(model, [str(i) for i in range(10)], backend=backend)
    except LenetError as e:
        if os.environ.get("CI"):  # CI has a compiler and ONNX Runtime: every backend runs
            raise
        pytest.skip(str(e))  # no compiler / no ONNX Runtime here
    extractor = FeatureExtractor(predictor)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    features, logits = extractor.batch(images)
    assert features.shape == (3, 84)
    np.testing.assert_allclose(logits, predictor.logits(images).numpy(), atol=1e-5)
    for i in range(3):
        f1, l1 = extractor.one(images[i])
        np.testing.assert_allclose(f1, features[i], atol=1e-5)
        np.testing.assert_allclose(l1, logits[i], atol=1e-5)


def test_offline_sets_are_uint8_frames_of_the_right_size():
    rng = np.random.default_rng(0)
    sets = [*noise_sets((28, 28), 20, rng), *glyph_sets((28, 28))]
    for s in sets:
        assert s.images.dtype == np.uint8 and s.images.shape[1:] == (28, 28), s.name
    digits = next(s for s in sets if s.name == "rendered digits").images
    assert len(digits) == 30 and digits.max() == 255
    assert (digits[:, [0, -1], :].max() > 100).any()  # glyphs fill the frame, as products do


@pytest.mark.slow
def test_benchmark_table_and_figure(tmp_path):
    f, y = clusters()
    detectors = make_detectors(knn_k=5, knn_bank=300)
    for d in detectors.values():
        d.fit(inputs(f), y)
    g = fitted.FittedDetectors(detectors, {n: d.score(inputs(f)) for n, d in detectors.items()}, {})
    lookup = {}

    def probe(kind, seed, shift):
        x, _ = clusters(100, seed)
        images = np.full((100, 28, 28), seed, np.uint8)  # the key to find the features
        lookup[seed] = inputs(x + shift, fashion_like(100, seed) if shift == 0 else images)
        return ProbeSet(f"{kind} {seed}", kind, images)

    sets = [probe("far", 1, -9.0), probe("glyphs", 2, 3.0), probe("near", 3, 1.0)]
    test = np.full((100, 28, 28), 7, np.uint8)
    lookup[7] = inputs(clusters(100, 7)[0])
    b = benchmark.run(lambda images, originals: g.scores(lookup[int(images[0, 0, 0])]), test,
                      sets, {n: g.threshold(n) for n in g.names}, 0.95)
    rows = {r["detector"]: r for r in b.summary()}
    assert rows["mahalanobis"]["far_auroc"] == 1.0 and rows["knn"]["far_fpr95"] == 0.0
    table = benchmark.format_markdown(b, "combined")
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
             if line.startswith("| ")]
    assert [row[0] for row in cells if row[0].startswith("**")] == ["**combined** (default)"]
    assert ["far 1", "far", "100"] in [row[:3] for row in cells]
    png = benchmark.plot_roc(b, tmp_path / "roc.png", "synthetic")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert json.dumps(b.to_dict())  # serialisable


def test_loaders_keep_the_calibration_images_out_of_training_and_evaluation():
    from conftest import synthetic_split

    from lenet.data.datasets import DATASETS
    from lenet.data.loader import calibration_holdout, make_loaders
    from lenet.data.sources import Dataset, Split

    images, labels = synthetic_split(500, seed=0)
    images[:, 0, 0] = np.arange(500) % 256  # a tag per image, to find it again
    images[:, 0, 1] = np.arange(500) // 256
    test = Split(*synthetic_split(50, seed=1))
    dataset = Dataset(DATASETS["fashion-mnist"], Split(images, labels), test, Path("."))
    seen = {}
    for holdout in (0, 60):
        loaders = make_loaders(dataset, torch.device("cpu"), batch_size=64, seed=2,
                               val_split=0.1, ood_holdout=holdout)
        tags = set()
        for batches in (loaders.train, loaders.eval):
            x = torch.round(batches.images[:, 0, 0, :2] * 255).long()
            tags |= set((x[:, 0] + 256 * x[:, 1]).tolist())
        seen[holdout] = tags
    held = set(calibration_holdout(500, 60, 2).tolist())
    assert len(held) == 60 and seen[0] == set(range(500))
    assert seen[60] == set(range(500)) - held


def test_the_command_lines_detector_names_are_the_detectors():
    from lenet.ood.choices import DETECTORS
    from lenet.ood.detectors import make_detectors

    assert tuple(make_detectors()) == DETECTORS
