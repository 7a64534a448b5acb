"""Each inspection command on a small model trained on the real Fashion-MNIST
(fails, never skips, when the data is missing)."""

import json

import numpy as np
import pytest
from conftest import StopAfter, lenet_cli
from PIL import Image

from lenet.data import sources
from lenet.run import shortcuts as runner
from lenet.run.console import Console
from lenet.training.config import TrainConfig

pytestmark = [pytest.mark.data, pytest.mark.slow]  # each test needs a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """lenet5-modern after 300 steps (batch 128) of SGD with momentum: about 0.85 accuracy."""
    out = tmp_path_factory.mktemp("runs")
    config = TrainConfig(model="lenet5-modern", epochs=1, lr=0.05, momentum=0.9, device="cpu",
                         out_dir=str(out), name="small", val_split=None)
    runner.train(config, console=Console(progress=False), stop=StopAfter(300))
    return out / "small"


@pytest.fixture(scope="module")
def data():
    return sources.load("fashion-mnist", download=False)




def test_evaluate(trained, capsys):
    code, out, _ = lenet_cli(capsys, "evaluate", trained)
    assert code == 0 and "test split: 10,000 examples" in out and "ankle boot" in out
    report = json.loads((trained / "evaluation-test.json").read_text())
    assert np.array(report["confusion"]).sum() == 10_000
    assert report["accuracy"] > 0.7
    assert all(0 <= row["f1"] <= 1 for row in report["per_class"])
    assert (trained / "confusion-test.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_images_and_bad_inputs(trained, data, tmp_path, capsys):
    boot = tmp_path / "boot.png"
    Image.fromarray(data.test.images[0]).resize((140, 140)).save(boot)  # an ankle boot
    light = tmp_path / "light.jpg"
    Image.fromarray(255 - data.test.images[1]).convert("RGB").save(light, quality=95)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, out, err = lenet_cli(capsys, "predict", trained, boot, light, empty, text, "--json",
                           "--top-k", "10")
    assert code == 1  # some files failed, the others were predicted
    assert err.count("lenet: error:") == 2 and "empty file" in err and "not an image" in err
    results = {r["file"]: r for r in json.loads(out)}
    assert results[str(boot)]["top"][0]["class"] == "ankle boot"
    assert sum(t["probability"] for t in results[str(boot)]["top"]) == pytest.approx(1, abs=1e-5)
    assert results[str(light)]["inverted"] is True
    assert results[str(light)]["top"][0]["class"] == "pullover"
    assert results[str(boot)]["out_of_distribution"] is False
    assert "error" in results[str(empty)]
    code, out, _ = lenet_cli(capsys, "predict", trained, boot)
    assert code == 0 and out.startswith(f"{boot}: ankle boot ")


def test_activations(trained, tmp_path, capsys):
    out_png = tmp_path / "acts.png"
    code, out, _ = lenet_cli(capsys, "activations", trained, "--classes", "pullover,coat", "--n",
                             "2", "--index", "0", "--out", out_png)
    assert code == 0 and out.startswith("5 inputs:")
    assert Image.open(out_png).size[1] > 500
    code, _, err = lenet_cli(capsys, "activations", trained, "--classes", "sweater")
    assert code == 2 and "unknown class 'sweater'" in err


def test_ood(trained, capsys):
    code, out, _ = lenet_cli(capsys, "ood", trained, "--n", "200")
    assert code == 0
    for group in ("test images", "uniform noise", "Gaussian noise", "blank black",
                  "photo: cat (chelsea)"):
        assert group in out
    report = json.loads((trained / "ood.json").read_text())
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["test images"]["flagged"] < 0.1  # the threshold passes 95% of test images
    assert groups["test images"]["mean_confidence"] > groups["uniform noise"]["mean_confidence"]
    assert (trained / "ood.png").stat().st_size > 10_000


def test_export_onnx_agrees_on_the_whole_test_split(trained, tmp_path, capsys):
    code, out, _ = lenet_cli(capsys, "export", trained, "--onnx", tmp_path / "m.onnx")
    assert code == 0
    assert "verified on 10,000 test images: predictions agree on 100.00%" in out


def test_data_show_and_summary_plot(tmp_path, capsys):
    code, out, _ = lenet_cli(capsys, "data", "show", "--n", "12", "--out", tmp_path / "s.png")
    assert code == 0 and Image.open(tmp_path / "s.png").size[0] > 500
    code, out, _ = lenet_cli(capsys, "summary", "--model", "lenet5", "--plot", tmp_path / "net.png")
    assert code == 0 and "diagram:" in out and (tmp_path / "net.png").exists()
