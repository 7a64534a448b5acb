"""`from lenet.d2l import tensorflow as d2l`: the book's TensorFlow API for the LeNet chapter.

A drop-in for `from d2l import tensorflow as d2l` for what the chapter's
TensorFlow tab uses (Module, Classifier, DataModule, FashionMNIST, Trainer,
try_gpu, add_to_class, ProgressBoard), on current TensorFlow, whose `tf.keras`
is Keras 3. Names and signatures are the book's. Underneath, the training step
(forward, loss, gradients, SGD update) is one compiled `tf.function`, the data
are numpy batches from lenet's verified files (no Keras download), and losses
are read from the device only when a point is plotted. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from . import arrays
from .figures import ProgressBoard, set_axes, set_figsize, show_images, use_svg_display
from .hparams import HyperParameters, add_to_class

__all__ = [
    "Classifier", "DataModule", "FashionMNIST", "HyperParameters", "Module", "ProgressBoard",
    "Trainer", "add_to_class", "cpu", "gpu", "np", "num_gpus", "set_axes", "set_figsize",
    "show_images", "tf", "try_all_gpus", "try_gpu", "use_svg_display",
]


# ---- devices: tf.device contexts, used as `with d2l.try_gpu():` ----


def cpu() -> Any:
    return tf.device("/CPU:0")


def gpu(i: int = 0) -> Any:
    return tf.device(f"/GPU:{i}")


def num_gpus() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def try_gpu(i: int = 0) -> Any:
    """Return gpu(i) if it exists, otherwise cpu() (both are context managers)."""
    return gpu(i) if num_gpus() >= i + 1 else cpu()


def try_all_gpus() -> list[Any]:
    return [gpu(i) for i in range(num_gpus())] or [cpu()]


# ---- data ----


def _shuffle_rng() -> np.random.Generator:
    # From numpy's global seed, which tf.keras.utils.set_random_seed sets with TF's own
    return np.random.default_rng(np.random.randint(2**31 - 1))


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # (B, H, W, C) -> (B, *size, C), as the book's loader resizes each batch
    return tf.image.resize_with_pad(images, *size).numpy()


class DataModule(arrays.DataModule):
    """The base class of data: numpy batches shuffled from numpy's global seed."""

    def shuffle_rng(self) -> np.random.Generator:
        return _shuffle_rng()


class FashionMNIST(arrays.FashionMNIST, DataModule):
    """The Fashion-MNIST dataset: NHWC float32 images in [0, 1], int32 labels."""

    def resize_batch(self, images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return _resize(images, size)


# ---- models ----


class Module(tf.keras.Model, HyperParameters):
    """The base class of models."""

    # Set by save_hyperparameters (the book's API), or by the trainer:
    plot_train_per_epoch: int
    plot_valid_per_epoch: int
    training: bool | None  # None until the trainer sets it

    def __init__(self, plot_train_per_epoch: int = 2, plot_valid_per_epoch: int = 1) -> None:
        super().__init__()
        # Keras 3's Model.__init__ sets `self.loss = None` on the instance, which hides the
        # class's `loss` method (d2l 1.0.3 fails there: 'NoneType' object is not callable).
        # Nothing here uses Keras' compile(), so the instance attribute goes.
        if "loss" in vars(self) and vars(self)["loss"] is None:
            del self.loss
        self.save_hyperparameters()
        self.board = ProgressBoard()
        self.training = None

    def loss(self, y_hat: Any, y: Any) -> Any:
        raise NotImplementedError

    def forward(self, X: Any) -> Any:
        assert hasattr(self, "net"), "Neural network is defined"
        return self.net(X)

    def call(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs and "training" in kwargs:
            self.training = kwargs["training"]
        return self.forward(X, *args)

    def plot(self, key: str, value: Any, train: bool) -> None:
        """Plot a point in animation (the value stays on its device until plotted)."""
        assert hasattr(self, "trainer"), "Trainer is not inited"
        self.board.xlabel = "epoch"
        if train:
            x = self.trainer.train_batch_idx / self.trainer.num_train_batches
            n = self.trainer.num_train_batches / self.plot_train_per_epoch
        else:
            x = self.trainer.epoch + 1
            n = self.trainer.num_val_batches / self.plot_valid_per_epoch
        self.board.draw(x, value, ("train_" if train else "val_") + key, every_n=max(int(n), 1))

    def training_step(self, batch: Any) -> Any:
        l = self.loss(self(*batch[:-1]), batch[-1])  # noqa: E741 (the book's name)
        self.plot("loss", l, train=True)
        return l

    def validation_step(self, batch: Any) -> None:
        l = self.loss(self(*batch[:-1]), batch[-1])  # noqa: E741
        self.plot("loss", l, train=False)

    def configure_optimizers(self) -> Any:
        return tf.keras.optimizers.SGD(self.lr)


class Classifier(Module):
    """The base class of classification models."""

    def validation_step(self, batch: Any) -> None:
        Y_hat = self(*batch[:-1])
        self.plot("loss", self.loss(Y_hat, batch[-1]), train=False)
        self.plot("acc", self.accuracy(Y_hat, batch[-1]), train=False)

    def accuracy(self, Y_hat: Any, Y: Any, averaged: bool = True) -> Any:
        """Compute the number of correct predictions."""
        Y_hat = tf.reshape(Y_hat, (-1, Y_hat.shape[-1]))
        preds = tf.cast(tf.argmax(Y_hat, axis=1), Y.dtype)
        compare = tf.cast(preds == tf.reshape(Y, (-1,)), tf.float32)
        return tf.reduce_mean(compare) if averaged else compare

    def loss(self, Y_hat: Any, Y: Any, averaged: bool = True) -> Any:
        Y_hat = tf.reshape(Y_hat, (-1, Y_hat.shape[-1]))
        Y = tf.reshape(Y, (-1,))
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(Y, tf.int32), Y_hat)
        return tf.reduce_mean(losses) if averaged else losses

    def layer_summary(self, X_shape: tuple[int, ...]) -> None:
        """Print each layer's output shape, as the book does."""
        X = tf.random.normal(X_shape)
        for layer in self.net.layers:
            X = layer(X)
            print(layer.__class__.__name__, "output shape:\t", X.shape)


def _stock(model: Module, method: str) -> bool:
    """Whether `model` uses the Classifier's own `method` (so the compiled steps may stand in)."""
    return getattr(type(model), method) is getattr(Classifier, method)


# ---- training ----


class Trainer(HyperParameters):
    """The base class for training models with data."""

    # Set by save_hyperparameters from the constructor's arguments (the book's API).
    max_epochs: int
    num_gpus: int
    gradient_clip_val: float

    def __init__(self, max_epochs: int, num_gpus: int = 0, gradient_clip_val: float = 0) -> None:
        self.save_hyperparameters()

    def prepare_data(self, data: DataModule) -> None:
        self.train_dataloader = data.train_dataloader()
        self.val_dataloader = data.val_dataloader()
        self.num_train_batches = len(self.train_dataloader)
        self.num_val_batches = len(self.val_dataloader) if self.val_dataloader is not None else 0

    def prepare_model(self, model: Module) -> None:
        model.trainer = self
        model.board.xlim = [0, self.max_epochs]
        self.model = model

    def fit(self, model: Module, data: DataModule) -> None:
        self.prepare_data(data)
        self.prepare_model(model)
        self.optim = model.configure_optimizers()
        first = next(iter(self.train_dataloader))
        model(*first[:-1])  # build the layers and the optimizer outside the compiled step
        self.optim.build(model.trainable_variables)
        self._train_step = _compiled_train_step(model, self.optim, self.gradient_clip_val) \
            if _stock(model, "training_step") else None
        self._val_step = _compiled_val_step(model) if _stock(model, "validation_step") else None
        self.epoch = 0
        self.train_batch_idx = 0
        self.val_batch_idx = 0
        for self.epoch in range(self.max_epochs):  # noqa: B020 (the book's loop)
            self.fit_epoch()
        model.board.finish()

    def prepare_batch(self, batch: Any) -> Any:
        return batch

    def fit_epoch(self) -> None:
        self.model.training = True
        for batch in self.train_dataloader:
            batch = self.prepare_batch(batch)
            if self._train_step is not None:
                self.model.plot("loss", self._train_step(*batch), train=True)
            else:  # the reader's own training_step, as the book runs it
                with tf.GradientTape() as tape:
                    loss = self.model.training_step(batch)
                grads = tape.gradient(loss, self.model.trainable_variables)
                if self.gradient_clip_val > 0:
                    grads = self.clip_gradients(self.gradient_clip_val, grads)
                self.optim.apply_gradients(zip(grads, self.model.trainable_variables,
                                               strict=True))
            self.train_batch_idx += 1
        if self.val_dataloader is None:
            return
        self.model.training = False
        for batch in self.val_dataloader:
            batch = self.prepare_batch(batch)
            if self._val_step is not None:
                l, acc = self._val_step(*batch)  # noqa: E741
                self.model.plot("loss", l, train=False)
                self.model.plot("acc", acc, train=False)
            else:
                self.model.validation_step(batch)
            self.val_batch_idx += 1

    def clip_gradients(self, grad_clip_val: float, grads: list[Any]) -> list[Any]:
        clipped, _ = tf.clip_by_global_norm([tf.convert_to_tensor(g) for g in grads],
                                            grad_clip_val)
        return clipped


def _compiled_train_step(model: Module, optim: Any, clip: float) -> Callable[..., Any]:
    """The book's training step and update as one compiled function of (X, y)."""
    @tf.function(reduce_retracing=True)  # the smaller last batch: one more trace at most
    def step(X: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            l = model.loss(model(X, training=True), y)  # noqa: E741
        grads = tape.gradient(l, model.trainable_variables)
        if clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        optim.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return l

    return step


def _compiled_val_step(model: Module) -> Callable[..., Any]:
    """The book's validation loss and accuracy of a batch, as one compiled function."""
    @tf.function(reduce_retracing=True)  # the smaller last batch: one more trace at most
    def step(X: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        Y_hat = model(X, training=False)
        return model.loss(Y_hat, y), model.accuracy(Y_hat, y)

    return step
