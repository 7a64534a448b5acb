"""`lenet ood fit`, `lenet ood --benchmark` and `lenet predict`'s OOD flag on small runs of the
synthetic dataset (no real data needed)."""

import json

import numpy as np
import pytest
from conftest import lenet_cli
from PIL import Image

import lenet
from lenet.data.loader import calibration_holdout
from lenet.errors import LenetWarning
from lenet.ood import fitted
from lenet.ood.fitted import VERSION
from lenet.run.console import Console
from lenet.training.config import TrainConfig


@pytest.fixture
def run_dir(synthetic, tmp_path):
    """lenet5-modern, 2 epochs on 200 synthetic images, 40 of them kept out for calibration."""
    config = TrainConfig(dataset="synthetic", model="lenet5-modern", optimizer="adam", lr=0.01,
                         batch_size=32, epochs=2, out_dir=str(tmp_path / "runs"), name="s",
                         device="cpu", seed=1, ood_holdout=40)
    return lenet.Run.create(config).fit(console=Console(progress=False)).run_dir


@pytest.mark.slow
def test_training_fits_the_detectors_and_calibrates_on_the_held_out_images(run_dir):
    meta = json.loads((run_dir / fitted.META).read_text())
    assert meta["format"] == "lenet-ood" and meta["version"] == fitted.VERSION
    assert meta["default"] == "combined" and meta["tpr"] == 0.95
    assert meta["calibration"]["held_out_of_training"] is True
    record = json.loads((run_dir / "config.json").read_text())
    assert record["dataset"]["train_examples"] == 160  # 200 less the 40 kept out
    loaded = fitted.FittedDetectors.load(run_dir)
    held = calibration_holdout(200, 40, seed=1)
    # Calibration: exactly the training images kept out of training; never the test split
    # (the indices are rows of the training split), never the fitting images.
    assert np.array_equal(loaded.indices["calibration"], held)
    assert not set(loaded.indices["fit"]) & set(held)
    assert loaded.indices["fit"].max() < 200


@pytest.mark.slow
def test_ood_fit_on_an_older_run_and_predict_with_the_flag(run_dir, tmp_path, capsys):
    for name in (fitted.META, fitted.ARRAYS):  # as a run trained before lenet fitted them
        (run_dir / name).unlink()
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)).save(
        image)
    code, out, err = lenet_cli(capsys, "predict", run_dir, image, "--json")
    assert code == 0 and "has no fitted OOD detectors: fitted them" in err
    result = json.loads(out)[0]
    assert result["score"]["detector"] == "combined" and result["score"]["tpr"] == 0.95
    assert result["score"]["value"] < result["score"]["threshold"]
    assert result["out_of_distribution"] is True
    code, out, _ = lenet_cli(capsys, "ood", "fit", run_dir)
    assert code == 0 and "fitted 6 OOD detectors" in out and "combined" in out
    code, out, _ = lenet_cli(capsys, "predict", run_dir, image, "--detector", "msp",
                             "--tpr", "0.9", "--json")
    assert code == 0 and json.loads(out)[0]["score"]["detector"] == "msp"
    meta = json.loads((run_dir / fitted.META).read_text())
    meta["model"]["fingerprint"] = "0" * 16  # fitted for other weights: refitted on use
    (run_dir / fitted.META).write_text(json.dumps(meta))
    code, _, err = lenet_cli(capsys, "predict", run_dir, image)
    assert code == 0 and "belongs to other weights of this run" in err
    meta = json.loads((run_dir / fitted.META).read_text())
    meta["version"] = 99
    (run_dir / fitted.META).write_text(json.dumps(meta))
    code, _, err = lenet_cli(capsys, "ood", run_dir, "--no-photos", "--n", "10")
    assert code == 2 and (f"format version 99, this lenet reads version {VERSION}: upgrade lenet"
                          in err)


@pytest.mark.slow
def test_benchmark_on_a_small_slice(run_dir, capsys):
    code, out, _ = lenet_cli(capsys, "ood", run_dir, "--benchmark", "--n", "20")
    assert code == 0
    first_cells = {line.split("|")[1].strip() for line in out.splitlines()
                   if line.startswith("|")}
    for detector in ("msp", "energy", "mahalanobis", "knn", "pixels", "**combined** (default)"):
        assert detector in first_cells
    for name in ("photo crops", "rendered digits", "uniform noise", "test images rotated 90"):
        assert name in first_cells
    report = json.loads((run_dir / "ood-benchmark.json").read_text())
    rows = {r["detector"]: r for r in report["summary"]}
    assert 0 <= rows["combined"]["far_auroc"] <= 1 and report["default"] == "combined"
    assert report["conditions"]["seed"] == 1 and report["conditions"]["ood_holdout"] == 40
    assert (run_dir / "ood-benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "ood-benchmark.md").read_text().split("|")[1].strip() == "detector"


@pytest.mark.slow
def test_ood_command_errors(run_dir, capsys):
    code, _, err = lenet_cli(capsys, "ood", run_dir, "extra")
    assert code == 2 and "unexpected argument 'extra'" in err
    code, _, err = lenet_cli(capsys, "ood", "fit", run_dir / "missing")
    assert code == 2 and "no checkpoint there" in err


@pytest.mark.slow
def test_a_resized_run_trains_and_predicts_without_detectors(synthetic, tmp_path, capsys):
    config = TrainConfig(dataset="synthetic", model="lenet5-modern", epochs=1, batch_size=64,
                         resize=(32, 32), out_dir=str(tmp_path / "runs"), name="r", device="cpu")
    # the library tells, without printing: a note (LenetWarning), as `lenet` shows it
    with pytest.warns(LenetWarning, match="only for models of the data's image size"):
        run = lenet.Run.create(config).fit(console=Console(progress=False)).run_dir
    assert capsys.readouterr().err == ""
    assert not (run / fitted.META).exists()
    image = tmp_path / "x.png"
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(image)
    code, out, err = lenet_cli(capsys, "predict", run, image, "--json")
    assert code == 0 and "no out-of-distribution check" in err
    assert json.loads(out)[0]["out_of_distribution"] is None
