"""The chapter's JAX tab (`from lenet.d2l import jax as d2l`) on synthetic data: its jitted
training step against the book's own loop, the reader's accuracy, the data, the imports."""

import random

import numpy as np
import pytest
from conftest import require
from tabs import modules_after, synthetic_data

jax = require("jax")
require("flax")
from flax import linen as nn  # noqa: E402
from jax import numpy as jnp  # noqa: E402

from lenet.d2l import arrays  # noqa: E402
from lenet.d2l import jax as d2l  # noqa: E402


class LeNet(d2l.Classifier):
    """The chapter's LeNet-5, as its JAX tab writes it."""

    lr: float = 0.1
    num_classes: int = 10

    def setup(self):
        init = nn.initializers.xavier_uniform()
        self.net = nn.Sequential([
            nn.Conv(features=6, kernel_size=(5, 5), padding="SAME", kernel_init=init),
            nn.sigmoid, lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
            nn.Conv(features=16, kernel_size=(5, 5), padding="VALID", kernel_init=init),
            nn.sigmoid, lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
            lambda x: x.reshape((x.shape[0], -1)),
            nn.Dense(features=120, kernel_init=init), nn.sigmoid,
            nn.Dense(features=84, kernel_init=init), nn.sigmoid,
            nn.Dense(features=self.num_classes, kernel_init=init)])


class BooksLoop(LeNet):
    """The same model with the book's training and validation steps as the reader would
    override them: the Trainer runs these as the book does, one call at a time."""

    def training_step(self, params, batch, state):
        return super().training_step(params, batch, state)

    def validation_step(self, params, batch, state):
        return super().validation_step(params, batch, state)


Synthetic = synthetic_data(d2l)


def fit(model, epochs=2, lr_seed=0):
    random.seed(lr_seed)  # the key and the shuffles come from Python's random (d2l.get_seed)
    trainer = d2l.Trainer(max_epochs=epochs, num_gpus=1)
    data = Synthetic()
    trainer.fit(model, data)
    return trainer, data


@pytest.mark.slow  # two fits, each compiling its steps
def test_jitted_step_matches_the_books_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fused, _ = fit(LeNet(lr=0.5))
    books, _ = fit(BooksLoop(lr=0.5))
    assert fused._train_step is not None and books._train_step is None
    leaves = jax.tree_util.tree_leaves
    a, b = leaves(fused.state.params), leaves(books.state.params)
    assert len(a) == len(b) == 10
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    assert int(fused.state.step) == int(books.state.step) == 2 * 8  # 256 / 32 batches, 2 epochs
    # the same points plotted, by the same names
    for board_a, board_b in [(fused.model.board, books.model.board)]:
        assert list(board_a.data) == list(board_b.data) == ["train_loss", "val_loss", "val_acc"]
        for key in board_a.data:
            np.testing.assert_allclose([p.y for p in board_a.data[key]],
                                       [p.y for p in board_b.data[key]], rtol=1e-4)


def test_readers_validation_accuracy_is_the_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, data = fit(LeNet(lr=0.9), epochs=1)
    model = trainer.model
    hits = [model.accuracy(trainer.state.params, batch[:-1], batch[-1], trainer.state,
                           averaged=False) for batch in data.val_dataloader()]
    assert [h.shape for h in hits] == [(32,), (32,)]
    logits = model.apply({"params": trainer.state.params}, data.X[256:])
    expected = (np.asarray(logits).argmax(1) == data.y[256:]).mean()
    assert float(jnp.concatenate(hits).mean()) == pytest.approx(expected)
    assert model.board.data["val_acc"][-1].y == pytest.approx(expected, abs=1e-6)


def test_loss_per_example_and_mean():
    model = LeNet()
    X = jnp.zeros((4, 28, 28, 1))
    params = model.init(jax.random.PRNGKey(0), X)["params"]
    state = d2l.TrainState.create(apply_fn=model.apply, params=params, batch_stats={},
                                  dropout_rng=jax.random.PRNGKey(1),
                                  tx=model.configure_optimizers())
    Y = jnp.array([0, 1, 2, 3])
    each, aux = model.loss(params, (X,), Y, state, averaged=False)
    mean, _ = model.loss(params, (X,), Y, state)
    logits = np.asarray(model.apply({"params": params}, X), dtype=np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(each), -log_p[np.arange(4), [0, 1, 2, 3]], rtol=1e-5)
    assert float(mean) == pytest.approx(float(each.mean())) and aux == {}


def test_batches_cover_the_split_once_per_pass():
    X = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10, dtype=np.int32)
    batches = arrays.NumpyBatches((X, y), 4, shuffle=True, rng=np.random.default_rng(0))
    assert len(batches) == 3
    first, second = list(batches), list(batches)
    assert [len(b[1]) for b in first] == [4, 4, 2]  # the last batch smaller, as tf.data's
    for passed in (first, second):
        seen = np.concatenate([b[1] for b in passed])
        assert sorted(seen) == list(range(10))
        assert all((b[0].ravel() == b[1]).all() for b in passed)  # images stay with labels
    assert not np.array_equal(np.concatenate([b[1] for b in first]),
                              np.concatenate([b[1] for b in second]))
    in_order = arrays.NumpyBatches((X, y), 4, shuffle=False)
    assert np.concatenate([b[1] for b in in_order]).tolist() == list(range(10))


def test_resize_to_the_requested_size():
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    size = arrays.needs_resize((32, 32), images)
    assert size == (32, 32) and arrays.needs_resize((28, 28), images) is None
    assert d2l._resize(images, size).shape == (3, 32, 32, 1)


def test_import_pulls_neither_torch_nor_tensorflow():
    assert modules_after("import lenet.d2l.jax", ("torch", "tensorflow", "keras")) == []


def test_the_pytorch_tab_keeps_its_names_and_loads_torch_on_use():
    assert modules_after("import lenet.d2l", ("torch",)) == []
    assert modules_after("from lenet import d2l\nd2l.Trainer", ("torch",)) == ["torch"]
    from lenet import d2l as torch_tab

    missing = [name for name in torch_tab.__all__ if not hasattr(torch_tab, name)]
    assert not missing and callable(torch_tab.train_ch6) and torch_tab.nn.Conv2d
