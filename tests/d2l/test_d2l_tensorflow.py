"""The chapter's TensorFlow tab (`from lenet.d2l import tensorflow as d2l`) on Keras 3 and
synthetic data: its compiled step against the book's eager loop, the loss Keras 3 hid, the
reader's accuracy, try_gpu, the imports."""

import numpy as np
import pytest
from conftest import require
from tabs import modules_after, synthetic_data

tf = require("tensorflow")

from lenet.d2l import tensorflow as d2l  # noqa: E402


class LeNet(d2l.Classifier):
    """The chapter's LeNet-5, as its TensorFlow tab writes it."""

    def __init__(self, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        layers = tf.keras.layers
        self.net = tf.keras.models.Sequential([
            layers.Conv2D(filters=6, kernel_size=5, activation="sigmoid", padding="same"),
            layers.AvgPool2D(pool_size=2, strides=2),
            layers.Conv2D(filters=16, kernel_size=5, activation="sigmoid"),
            layers.AvgPool2D(pool_size=2, strides=2),
            layers.Flatten(),
            layers.Dense(120, activation="sigmoid"), layers.Dense(84, activation="sigmoid"),
            layers.Dense(num_classes)])


class BooksLoop(LeNet):
    """The same model with the book's steps overridden as a reader would: the Trainer runs
    them eagerly under a GradientTape, as the book does."""

    def training_step(self, batch):
        return super().training_step(batch)

    def validation_step(self, batch):
        return super().validation_step(batch)


Synthetic = synthetic_data(d2l)


def fit(model_class, epochs=2, lr=0.5):
    tf.keras.utils.set_random_seed(0)  # weights (TF) and shuffles (numpy's global seed)
    trainer = d2l.Trainer(max_epochs=epochs)
    data = Synthetic()
    with d2l.try_gpu():
        model = model_class(lr=lr)
        trainer.fit(model, data)
    return trainer, model, data


@pytest.mark.slow  # two fits, one of them eager
def test_compiled_step_matches_the_books_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled, model_a, _ = fit(LeNet)
    eager, model_b, _ = fit(BooksLoop)
    assert compiled._train_step is not None and eager._train_step is None
    assert len(model_a.trainable_variables) == len(model_b.trainable_variables) == 10
    for a, b in zip(model_a.trainable_variables, model_b.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert list(model_a.board.data) == ["train_loss", "val_loss", "val_acc"]
    for key in model_a.board.data:
        np.testing.assert_allclose([p.y for p in model_a.board.data[key]],
                                   [p.y for p in model_b.board.data[key]], rtol=1e-4)


def test_readers_validation_accuracy_is_the_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, model, data = fit(LeNet, epochs=1)
    hits = [model.accuracy(model(X), y, averaged=False) for X, y in data.val_dataloader()]
    assert [tuple(h.shape) for h in hits] == [(32,), (32,)]
    expected = (model(data.X[256:]).numpy().argmax(1) == data.y[256:]).mean()
    assert float(tf.reduce_mean(tf.concat(hits, 0))) == pytest.approx(expected)
    assert model.board.data["val_acc"][-1].y == pytest.approx(expected, abs=1e-6)


def test_keras_3_does_not_hide_the_books_loss():
    model = LeNet()
    X = tf.zeros((4, 28, 28, 1))
    Y = np.array([0, 1, 2, 3], dtype=np.int32)
    logits = model(X).numpy().astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -log_p[np.arange(4), Y]
    each = model.loss(model(X), Y, averaged=False)  # a method, not Keras 3's `self.loss = None`
    np.testing.assert_allclose(each.numpy(), expected, rtol=1e-5)
    assert float(model.loss(model(X), Y)) == pytest.approx(expected.mean(), rel=1e-5)
    assert model.lr == 0.1 and model.hparams == {"lr": 0.1, "num_classes": 10}


def test_try_gpu_is_a_device_context():
    with d2l.try_gpu():
        x = tf.ones(2)
    expected = "GPU" if d2l.num_gpus() else "CPU"
    assert expected in x.device and len(d2l.try_all_gpus()) >= 1


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: 3-6 s
def test_import_pulls_no_torch():
    assert modules_after("import lenet.d2l.tensorflow", ("torch",)) == []
