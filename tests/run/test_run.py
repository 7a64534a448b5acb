"""lenet.Run: training through sinks, and using a trained run from Python."""

import numpy as np
import pytest
import torch
from conftest import QUIET, StopAfter

import lenet
from lenet.errors import ConfigError
from lenet.run.events import OnlyIf, Sink
from lenet.run.sinks import CheckpointSink
from lenet.training import checkpoint
from lenet.training.config import TrainConfig


def config(tmp_path, **changes) -> TrainConfig:
    base = dict(dataset="synthetic", model="lenet5-modern", optimizer="adam", lr=0.01,
                batch_size=32, epochs=2, out_dir=str(tmp_path / "runs"), device="cpu", seed=3)
    return TrainConfig(**{**base, **changes})


class Recorder(Sink):
    """A custom sink: notes every event it is told."""

    def __init__(self) -> None:
        self.events = []

    def on_start(self, start):
        self.events.append(("start", start.start_epoch, start.record["parameters"]))

    def on_step(self, progress):
        if progress.done:
            self.events.append(("trained", progress.epoch))

    def on_epoch(self, epoch):
        self.events.append(("epoch", epoch.row["epoch"], round(epoch.row["test_acc"], 6)))

    def on_stop(self, stop):
        self.events.append(("stop", stop.reason))

    def on_finish(self, finish):
        self.events.append(("finish", len(finish.history)))

    def close(self):
        self.events.append(("close",))


@pytest.mark.slow
def test_a_custom_sink_sees_every_phase_and_a_rank_filter_is_one_wrapper(synthetic, tmp_path):
    run = lenet.Run.create(config(tmp_path, name="custom"))
    recorder, silent = Recorder(), Recorder()
    result = run.fit(sinks=[*run.default_sinks(QUIET), recorder, OnlyIf(silent, False)])
    accs = [round(r["test_acc"], 6) for r in result.history]
    assert recorder.events == [("start", 0, 61_706), ("trained", 0), ("epoch", 1, accs[0]),
                               ("trained", 1), ("epoch", 2, accs[1]), ("finish", 2), ("close",)]
    assert silent.events == []
    assert (run.path / "results.json").exists()


def test_only_the_sinks_given_write(synthetic, tmp_path):
    run = lenet.Run.create(config(tmp_path, name="bare", epochs=1))
    run.fit(sinks=[CheckpointSink(run.dir)])
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "checkpoint.pt"]  # + the lock


@pytest.mark.slow
def test_stop_is_reported_and_resume_continues(synthetic, tmp_path):
    recorder = Recorder()
    run = lenet.Run.create(config(tmp_path, name="cut"))
    result = run.fit(sinks=[*run.default_sinks(QUIET), recorder], stop=StopAfter(4))
    assert not result.completed and ("stop", "interrupted") in recorder.events
    again = lenet.Run.open(run.path)
    recorder = Recorder()
    assert again.fit(sinks=[*again.default_sinks(QUIET), recorder]).completed
    assert recorder.events[0] == ("start", 0, 61_706)  # 0 epochs done: it stopped mid-epoch
    with pytest.raises(ConfigError, match="already finished 2 of 2 epochs"):
        lenet.Run.open(run.path).fit(console=QUIET)


@pytest.mark.slow
def test_fit_leaves_the_callers_rng_as_it_was(synthetic, tmp_path):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    lenet.Run.create(config(tmp_path, epochs=1)).fit(console=QUIET)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture
def trained(synthetic, tmp_path):
    return lenet.Run.create(config(tmp_path, name="t", epochs=3)).fit(console=QUIET).run_dir


@pytest.mark.slow
@pytest.mark.parametrize("ood", [True, False])
def test_one_image_takes_the_single_image_path_with_the_batchs_answers(trained, ood):
    run = lenet.Run.open(trained)
    images = np.asarray(run.dataset.test.images[:4])
    batch = run.classify(images, top_k=3, ood=ood)
    for image, want in zip(images, batch, strict=True):
        for one in (run.classify(image, top_k=3, ood=ood)[0],  # (H, W)
                    run.classify(image[None], top_k=3, ood=ood)[0]):  # (1, H, W)
            assert one.index == want.index and one.top[0][0] == want.top[0][0]
            assert one.probability == pytest.approx(want.probability, abs=1e-5)
            assert one.out_of_distribution == want.out_of_distribution
            if ood:
                # (native single-image features vs the batch path: float sums in another order)
                assert one.score == pytest.approx(want.score, rel=1e-3, abs=1e-3)


def test_classify_returns_typed_predictions_with_an_ood_check(trained, synthetic, monkeypatch):
    reads = []
    real = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *a, **k: reads.append(a) or real(*a, **k))
    run = lenet.Run.open(trained)
    images = run.dataset.test.images[:6]
    predictions = run.classify(images, top_k=3)
    assert len(predictions) == 6 and all(isinstance(p, lenet.Prediction) for p in predictions)
    p = predictions[0]
    assert p.label == run.classes[p.index] == p.top[0][0] and p.top_indices[0] == p.index
    assert p.probability == pytest.approx(float(p.probabilities.max()))
    assert len(p.top) == 3 and p.detector == "combined" and p.threshold is not None
    assert p.out_of_distribution == (p.score < p.threshold)
    assert [q.index for q in predictions] == [int(i) for i in
                                              run.predictor().logits(images).argmax(1)]
    detector = run.ood_detector()  # fitted at the end of training, beside the checkpoint
    assert detector.name == "combined" and detector.threshold == p.threshold
    assert (trained / "ood-detectors.json").exists() and detector.tpr == 0.95
    msp = run.ood_detector("msp", tpr=0.9)
    assert msp.name == "msp" and 0 < msp.threshold <= 1
    assert run.classify(images[:1], ood=msp)[0].detector == "msp"
    plain = run.classify(images[:1], ood=False)[0]
    assert plain.threshold is None and plain.out_of_distribution is None
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    assert sum(q.out_of_distribution for q in run.classify(noise)) > 0
    run.evaluate("test")
    run.activations(images[:2])
    assert len(reads) == 1  # the checkpoint is read once per Run


@pytest.mark.slow
def test_evaluate_and_activations(trained):
    run = lenet.Run.open(trained)
    ev = run.evaluate("test")
    assert ev.examples == 100 and ev.accuracy == run.history[-1]["test_acc"]
    split = run.dataset.test
    assert run.evaluate(split, name="again").accuracy == ev.accuracy
    with pytest.raises(ConfigError, match="unknown split"):
        run.evaluate("val")
    acts = run.activations(split.images[:2])
    assert acts.layers["act1"].shape == (2, 6, 28, 28) and acts.layers["act2"].shape[0] == 2
    assert torch.allclose(acts.probabilities.sum(1), torch.ones(2))


@pytest.mark.slow
def test_open_refuses_changes_to_what_was_computed(trained):
    with pytest.raises(ConfigError, match="cannot change lr when resuming"):
        lenet.Run.open(trained, lr=0.5)
    assert lenet.Run.open(trained, threads=1).config.threads == 1
    assert lenet.Run.open(trained, eval_every=3).config.eval_every == 3  # trains the same


@pytest.mark.slow
def test_eval_every_evaluates_every_nth_epoch_and_the_last(synthetic, tmp_path):
    import io

    from lenet.run.console import Console
    from lenet.run.directory import read_metrics

    run = lenet.Run.create(config(tmp_path, name="sparse", epochs=5, eval_every=2))
    shown = io.StringIO()
    result = run.fit(console=Console(progress=False, stream=shown))
    evaluated = ["test_acc" in row for row in result.history]
    assert evaluated == [False, True, False, True, True]  # epochs 2, 4 and the last
    assert all("test_loss" not in row for row in result.history[::2][:2])
    # metrics.csv: every column, empty cells where an epoch was not evaluated; read back as
    # the history (those keys absent)
    lines = (run.path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:5] == ["epoch", "train_loss", "train_acc", "test_loss",
                                       "test_acc"]
    assert lines[1].split(",")[3:5] == ["", ""]
    rows = read_metrics(run.path / "metrics.csv")
    assert [("test_acc" in row) for row in rows] == evaluated
    assert rows[3]["test_acc"] == pytest.approx(result.history[3]["test_acc"])
    assert result.final["test_acc"] == result.history[-1]["test_acc"]
    assert (run.path / "curves.png").stat().st_size > 0
    lines = shown.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    table = [line.split() for line in lines[header + 1:header + 6]]
    assert [len(cells) for cells in table] == [5, 7, 5, 7, 7]  # blank cells when skipped
    # Skipping an evaluation changes nothing in training: the same figures to the bit as
    # evaluating after every epoch (dropout here: its draws come after every evaluation).
    dropout = {"model_settings": {"dropout": 0.3}, "epochs": 3}
    sparse = lenet.Run.create(config(tmp_path, name="d2", eval_every=2, **dropout)).fit(
        console=QUIET)
    every = lenet.Run.create(config(tmp_path, name="d1", **dropout)).fit(console=QUIET)
    for sparse_row, row in zip(sparse.history, every.history, strict=True):
        assert sparse_row["train_loss"] == row["train_loss"]
        assert sparse_row.get("test_loss", row["test_loss"]) == row["test_loss"]
    assert "test_loss" not in sparse.history[0]


def test_eval_every_is_checked():
    with pytest.raises(ConfigError, match="--eval-every must be >= 1"):
        TrainConfig(eval_every=0)


ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx2 avx512f avx512_bf16

processor\t: 1
model name\t: something else
"""


def test_cpu_model_tells_apart_chips_a_vm_names_alike():
    from lenet.run.directory import cpu_model

    assert cpu_model(ZEN4) == "AMD EPYC (family 25 model 17, AVX-512)"
    zen3 = ZEN4.replace("model\t\t: 17", "model\t\t: 1").replace(" avx512f avx512_bf16", "")
    assert cpu_model(zen3) == "AMD EPYC (family 25 model 1, AVX2)"
    assert cpu_model("model name\t: Apple M2\n") == "Apple M2"
    assert cpu_model("") and cpu_model()  # the platform's name; this machine's


@pytest.mark.slow
def test_the_run_that_measured_the_layout_trains_as_the_runs_after_it(synthetic, tmp_path,
                                                                       monkeypatch):
    """A model the kernel does not fuse, with dropout: the first run on a machine times it in
    both layouts before training; its figures must be those of every later run."""
    from lenet.native import layout

    monkeypatch.setattr(layout, "cache_file", lambda: tmp_path / "layout.guard.json")
    monkeypatch.setattr(layout, "_SETTINGS", {**layout._SETTINGS, "budget_s": 0.05})
    layout.forget()
    histories = []
    for name in ("measured", "cached"):
        run = lenet.Run.create(config(tmp_path, name=name, model="lenet-100k", epochs=1,
                                      model_settings={"dropout": 0.5}))
        histories.append(run.fit(console=QUIET).history)
        assert (tmp_path / "layout.guard.json").exists()
        layout.forget()  # as a new process: the decision from the file
    assert histories[0][0]["train_loss"] == histories[1][0]["train_loss"]
    assert histories[0][0]["test_loss"] == histories[1][0]["test_loss"]
    # the layout it trained in is on record, with the guard's reason
    import json
    native = json.loads((tmp_path / "runs" / "cached" / "config.json").read_text())["native"]
    assert native["path"] == "pytorch" and native["layout"] in ("channels-last", "contiguous")
    assert "faster" in native["layout_why"]
