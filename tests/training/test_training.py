import json
import os
import signal
import time

import pytest
import torch
from conftest import QUIET

from lenet.data.loader import Batches
from lenet.errors import ConfigError, LenetError, TrainingError
from lenet.models.config import MODELS
from lenet.models.network import build_model
from lenet.run import shortcuts as runner
from lenet.run.directory import read_metrics
from lenet.training import checkpoint
from lenet.training.config import TrainConfig
from lenet.training.loop import NonFiniteLossError, evaluate, train_one_epoch


def config(tmp_path, **changes) -> TrainConfig:
    base = dict(dataset="synthetic", model="lenet5-modern", optimizer="adam", lr=0.01,
                batch_size=32, epochs=3, out_dir=str(tmp_path / "runs"), device="cpu", seed=3)
    return TrainConfig(**{**base, **changes})


def weights(run_dir) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir)["model_state"]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_cover_every_example_once_per_epoch():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = Batches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    seen = torch.cat([b for _, b in batches.epoch(1)])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(seen, torch.cat([b for _, b in batches.epoch(2)]))
    assert torch.equal(seen, torch.cat([b for _, b in batches.epoch(1)]))  # seeded
    tail = torch.cat([b for _, b in batches.epoch(1, start=1)])
    assert torch.equal(tail, seen[4:])


@pytest.mark.slow
def test_train_one_epoch_learns_and_evaluate_reports(synthetic):
    from lenet.data import sources
    from lenet.data.loader import make_loaders

    data = make_loaders(sources.load("synthetic"), torch.device("cpu"), batch_size=20, seed=0)
    torch.manual_seed(0)
    model = build_model(MODELS["lenet5-modern"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = evaluate(model, data.eval)
    for epoch in range(4):
        totals = train_one_epoch(model, data.train, optimizer, epoch=epoch)
    after = evaluate(model, data.eval)
    assert totals.steps == len(data.train) == 10 and totals.examples == 200
    assert after.loss < before.loss and after.accuracy > 0.5
    assert after.examples == 100


def test_non_finite_loss_is_caught():
    x = torch.rand(16, 1, 28, 28)
    x[3, 0, 5, 5] = float("nan")
    batches = Batches(x, torch.zeros(16, dtype=torch.long), batch_size=8, shuffle=False)
    model = build_model(MODELS["lenet5"])
    with pytest.raises(NonFiniteLossError, match="no longer finite"):
        train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.slow
def test_run_writes_a_complete_record(synthetic, tmp_path):
    result = runner.train(config(tmp_path, name="a"), console=QUIET)
    run = result.run_dir
    assert result.completed and run == tmp_path / "runs" / "a"
    assert {p.name for p in run.iterdir()} == {
        "config.json", "metrics.csv", "curves.png", "checkpoint.pt", "checkpoint.prev.pt",
        "results.json", "ood-detectors.json", "ood-detectors.npz", ".lock"}
    record = json.loads((run / "config.json").read_text())
    assert record["train"]["seed"] == 3 and record["model"]["activation"] == "relu"
    assert record["environment"]["torch"] == torch.__version__
    assert record["device"].startswith("cpu") and record["parameters"] == 61_706
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "examples_per_sec"}
    assert rows[-1]["test_acc"] > 0.5
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run / "results.json").read_text())
    assert results["test_acc"] == rows[-1]["test_acc"]


def test_model_is_rebuilt_from_its_checkpoint_alone(synthetic, tmp_path):
    result = runner.train(config(tmp_path, epochs=1), console=QUIET)
    model = checkpoint.load_model(result.run_dir)
    assert not model.training and model.config.activation == "relu"
    payload = checkpoint.load(result.run_dir)
    assert payload["classes"][0] == "class0" and payload["epoch"] == 1
    x = torch.rand(2, 1, 28, 28)
    reference = build_model(MODELS["lenet5-modern"])
    reference.load_state_dict(payload["model_state"])
    assert torch.equal(model(x), reference.eval()(x))


@pytest.mark.slow
def test_same_seed_same_metrics(synthetic, tmp_path):
    a = runner.train(config(tmp_path, epochs=2), console=QUIET)
    b = runner.train(config(tmp_path, epochs=2), console=QUIET)
    timing = {"examples_per_sec", "seconds", "wall_seconds", "elapsed_seconds"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in a.history]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in b.history]
    assert same_weights(weights(a.run_dir), weights(b.run_dir))
    c = runner.train(config(tmp_path, epochs=2, seed=4), console=QUIET)
    assert not same_weights(weights(a.run_dir), weights(c.run_dir))


def ctrl_c(stop: runner.StopRequest | None = None) -> None:
    """Send this process a real SIGINT, as a terminal's Ctrl-C does, and let Python run its
    handler (between two bytecodes of the main thread)."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(200):
        if stop is not None and stop():
            return
        time.sleep(0.005)


def test_first_ctrl_c_asks_to_stop_and_the_second_interrupts():
    before = signal.getsignal(signal.SIGINT)
    stop = runner.StopRequest()
    with stop:
        assert not stop()
        ctrl_c(stop)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()  # a second Ctrl-C interrupts at once
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_non_finite_loss_keeps_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    from lenet.run import fit as fitting

    real = fitting.train_one_epoch

    def diverge_in_epoch_2(*args, epoch, **kwargs):
        if epoch == 1:
            raise NonFiniteLossError(epoch, 3)
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(fitting, "train_one_epoch", diverge_in_epoch_2)
    with pytest.raises(TrainingError, match=r"last good checkpoint \(after epoch 1\) is kept"):
        runner.train(config(tmp_path, name="nan"), console=QUIET)
    assert checkpoint.load(tmp_path / "runs" / "nan")["epoch"] == 1


@pytest.mark.slow
def test_resume_rules(synthetic, tmp_path):
    run = runner.train(config(tmp_path, epochs=1, name="r"), console=QUIET).run_dir
    with pytest.raises(ConfigError, match="cannot change lr when resuming"):
        runner.resume(run, console=QUIET, lr=0.5)
    with pytest.raises(ConfigError, match="already finished 1 of 1 epochs"):
        runner.resume(run, console=QUIET)
    longer = runner.resume(run, console=QUIET, epochs=2)
    assert [r["epoch"] for r in longer.history] == [1, 2]
    with pytest.raises(LenetError, match="no checkpoint"):
        runner.resume(tmp_path / "nowhere", console=QUIET)


@pytest.mark.slow
def test_existing_run_directory_is_not_overwritten(synthetic, tmp_path):
    runner.train(config(tmp_path, epochs=1, name="same"), console=QUIET)
    with pytest.raises(ConfigError, match="already holds a run"):
        runner.train(config(tmp_path, epochs=1, name="same"), console=QUIET)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, schedule, extra", [
    ("sgd", "cosine", {"momentum": 0.9, "nesterov": True}),
    ("adamw", "one-cycle", {"weight_decay": 0.01}),
    ("rmsprop", "constant", {"lr": 0.001, "clip_grad": 1.0}),
])
def test_optimizers_and_schedules(synthetic, tmp_path, optimizer, schedule, extra):
    settings = {"lr": 0.01, **extra}
    result = runner.train(config(tmp_path, epochs=2, optimizer=optimizer, schedule=schedule,
                                 **settings), console=QUIET)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 1.5
    if schedule == "cosine":
        assert result.history[-1]["lr"] < 1e-6  # annealed to zero at the end


@pytest.mark.slow
def test_val_split_replaces_test(synthetic, tmp_path):
    result = runner.train(config(tmp_path, epochs=1, val_split=0.25), console=QUIET)
    row = result.history[0]
    assert "val_acc" in row and "test_acc" not in row and row["train_examples"] == 150


def test_resize_builds_a_matching_model(synthetic, tmp_path):
    result = runner.train(config(tmp_path, epochs=1, resize=(32, 32)), console=QUIET)
    assert checkpoint.load_model(result.run_dir).config.input_size == (32, 32)


def test_tta_flip_averages_the_logits_of_each_image_and_its_mirror():
    from lenet.data.loader import tta_mean as tta_logits

    torch.manual_seed(0)
    model = build_model(MODELS["lenet5-modern"]).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
        assert torch.allclose(tta_logits(model, x, "flip"), expected)
        assert torch.equal(tta_logits(model, x, None), model(x))
        # a mirror-symmetric batch: the same logits either way
        symmetric = (x + x.flip(-1)) / 2
        assert torch.allclose(tta_logits(model, symmetric, "flip"), model(symmetric), atol=1e-5)
    with pytest.raises(ValueError, match="test-time augmentation"):
        tta_logits(model, x, "rotate")


def test_tta_flip_shift_averages_six_views_with_airbench_weights():
    from lenet.data.loader import translate
    from lenet.data.loader import tta_mean as tta_logits

    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    down_right = translate(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert not down_right[..., 0, :].any() and not down_right[..., :, 0].any()
    assert torch.equal(translate(down_right, -1, -1)[..., :-1, :-1], x[..., :-1, :-1])
    assert torch.equal(translate(x, 0, 0), x)
    torch.manual_seed(0)
    model = build_model(MODELS["lenet5-modern"]).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        def pair(v: torch.Tensor) -> torch.Tensor:
            return (model(v) + model(v.flip(-1))) / 2
        expected = pair(x) / 2 + (pair(translate(x, -1, -1)) + pair(translate(x, 1, 1))) / 4
        assert torch.allclose(tta_logits(model, x, "flip+shift"), expected, atol=1e-5)


@pytest.mark.parametrize("tta", ["flip", "flip+shift"])
def test_every_named_tta_has_views_that_sum_to_one(tta):
    from lenet.data.loader import tta_views
    from lenet.training.config import TEST_TIME_AUGMENTATIONS

    assert tta in TEST_TIME_AUGMENTATIONS
    views = tta_views(torch.rand(3, 1, 28, 28), tta)
    assert sum(w for w, _ in views) == pytest.approx(1.0)
    assert all(v.shape == (3, 1, 28, 28) for _, v in views)
    # uint8 pixels as users pass them (N, H, W): the same views, the same dtype
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert all(v.dtype == torch.uint8 and v.shape == pixels.shape
               for _, v in tta_views(pixels, tta))


@pytest.mark.slow
def test_label_smoothing_and_tta_reach_the_run_and_its_record(synthetic, tmp_path):
    smooth = runner.train(config(tmp_path, epochs=1, label_smoothing=0.2, tta="flip+shift",
                                 name="smooth"), console=QUIET)
    plain = runner.train(config(tmp_path, epochs=1, name="plain"), console=QUIET)
    # the same weights after the same steps differ only by the loss: smoothing changes them
    assert not same_weights(weights(smooth.run_dir), weights(plain.run_dir))
    recorded = json.loads((smooth.run_dir / "config.json").read_text())["train"]
    assert recorded["label_smoothing"] == 0.2 and recorded["tta"] == "flip+shift"
    final = json.loads((smooth.run_dir / "results.json").read_text())
    final = final.get("final", final)
    assert 0 < final["data_seconds"] < final["elapsed_seconds"]
    assert final["clock_seconds"] == pytest.approx(final["elapsed_seconds"]
                                                   - final["data_seconds"])
    # `lenet evaluate` / Run.evaluate use the run's test-time augmentation too
    from lenet.run.record import Run

    again = Run.open(smooth.run_dir).evaluate("test")
    assert again.accuracy == pytest.approx(final["test_acc"], abs=0.02)
    assert again.loss == pytest.approx(final["test_loss"], rel=0.05)


@pytest.mark.parametrize("options, message", [
    ({"label_smoothing": 1.0}, "label-smoothing must be in"),
    ({"label_smoothing": -0.1}, "label-smoothing must be in"),
    ({"tta": "rotate"}, "unknown test-time augmentation"),
    ({"eval_batch_size": 0}, "eval batch size must be >= 1"),
])
def test_label_smoothing_and_tta_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)
