"""`from lenet.d2l import jax as d2l`: the book's JAX API for the LeNet chapter.

A drop-in for `from d2l import jax as d2l` for what the chapter's JAX tab uses
(Module, Classifier, DataModule, FashionMNIST, Trainer, get_key, add_to_class,
ProgressBoard), on current jax, flax and optax. Names and signatures are the
book's. Underneath, the whole training step (loss, gradients, SGD update) is
one jitted function, the data are numpy batches from lenet's verified files
(no TensorFlow, no tfds, no download), and losses are read from the device
only when a point is plotted. Imports no torch and no TensorFlow.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import field
from typing import Any

import flax
import jax
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state
from jax import numpy as jnp

from ..native import build
from . import arrays
from .figures import ProgressBoard, set_axes, set_figsize, show_images, use_svg_display
from .hparams import HyperParameters, add_to_class

__all__ = [
    "Classifier", "DataModule", "FashionMNIST", "HyperParameters", "Module", "ProgressBoard",
    "TrainState", "Trainer", "add_to_class", "cpu", "flax", "get_key", "get_seed", "gpu", "jax",
    "jnp", "nn", "np", "num_gpus", "optax", "set_axes", "set_figsize", "show_images", "try_gpu",
    "use_svg_display",
]


def _keep_compiled_programs() -> None:
    """Keep XLA's compiled programs between runs, under lenet's cache directory.

    The chapter compiles about 60 programs (each layer's init op by op, the steps),
    several seconds on 2 cores and much more on busy ones; the next run of it loads
    them instead. Not where the reader has chosen a cache, or with LENET_JAX_CACHE=0.
    """
    # jax's Config holds its options as attributes that its type does not declare
    chosen = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if chosen is not None or os.environ.get("LENET_JAX_CACHE") == "0":
        return
    jax.config.update("jax_compilation_cache_dir", str(build.cache_dir().parent / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small ones too


_keep_compiled_programs()


def get_seed() -> int:
    """A seed from Python's `random` (so `random.seed(...)` makes a run repeatable)."""
    return random.randint(0, 10**6)


def get_key() -> jax.Array:
    return jax.random.PRNGKey(get_seed())


# ---- devices ----


def cpu() -> Any:
    return jax.devices("cpu")[0]


def gpu(i: int = 0) -> Any:
    return jax.devices("gpu")[i]


def num_gpus() -> int:
    try:
        return jax.device_count("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib
        return 0


def try_gpu(i: int = 0) -> Any:
    """Return gpu(i) if it exists, otherwise cpu()."""
    return gpu(i) if num_gpus() >= i + 1 else cpu()


# ---- data ----


def _resize(images: np.ndarray, size: tuple[int, int]) -> jax.Array:
    # (B, H, W, C) -> (B, *size, C), bilinear as the book's tf.image.resize_with_pad on squares
    return jax.image.resize(images, (images.shape[0], *size, images.shape[3]), "bilinear")


class DataModule(arrays.DataModule):
    """The base class of data: numpy batches shuffled from the tab's seed (`get_seed`)."""

    def shuffle_rng(self) -> np.random.Generator:
        return np.random.default_rng(get_seed())


class FashionMNIST(arrays.FashionMNIST, DataModule):
    """The Fashion-MNIST dataset: NHWC float32 images in [0, 1], int32 labels."""

    def resize_batch(self, images: np.ndarray, size: tuple[int, int]) -> jax.Array:
        return _resize(images, size)


# ---- models ----


class Module(nn.Module, HyperParameters):
    """The base class of models: a flax linen Module (a dataclass; no save_hyperparameters)."""

    plot_train_per_epoch: int = field(default=2, init=False)
    plot_valid_per_epoch: int = field(default=1, init=False)
    # A new board for each model, as the book's default_factory makes it
    board: ProgressBoard = field(default_factory=lambda: ProgressBoard(), init=False)

    def loss(self, y_hat: Any, y: Any) -> Any:
        raise NotImplementedError

    def forward(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        assert hasattr(self, "net"), "Neural network is defined"
        return self.net(X, *args, **kwargs)

    def __call__(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        return self.forward(X, *args, **kwargs)

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

    def training_step(self, params: Any, batch: Any, state: Any) -> Any:
        l, grads = jax.value_and_grad(self.loss)(params, batch[:-1], batch[-1], state)  # noqa: E741
        self.plot("loss", l, train=True)
        return l, grads

    def validation_step(self, params: Any, batch: Any, state: Any) -> None:
        # The book calls its models' loss(params, X, Y, state), not this base's (y_hat, y)
        l = self.loss(params, batch[:-1], batch[-1], state)  # type: ignore[call-arg]  # noqa: E741
        self.plot("loss", l, train=False)

    def configure_optimizers(self) -> optax.GradientTransformation:
        return optax.sgd(self.lr)

    def apply_init(self, dummy_input: Any, key: Any) -> Any:
        # Jitted: one compilation, where running init op by op compiles each op (~1 s)
        return jax.jit(self.init)(key, *dummy_input)  # dummy_input: a tuple, unpacked


class Classifier(Module):
    """The base class of classification models."""

    def training_step(self, params: Any, batch: Any, state: Any) -> Any:
        # The loss returns (loss, auxiliary data): models with BatchNorm return their stats.
        value, grads = jax.value_and_grad(self.loss, has_aux=True)(params, batch[:-1],
                                                                  batch[-1], state)
        self.plot("loss", value[0], train=True)
        return value, grads

    def validation_step(self, params: Any, batch: Any, state: Any) -> None:
        l, _ = self.loss(params, batch[:-1], batch[-1], state)  # noqa: E741
        self.plot("loss", l, train=False)
        self.plot("acc", self.accuracy(params, batch[:-1], batch[-1], state), train=False)

    def accuracy(self, params: Any, X: Any, Y: Any, state: Any, averaged: bool = True) -> Any:
        """Compute the number of correct predictions."""
        return _accuracy(self, params, tuple(X), Y, state, averaged)

    # The book's signature, not the base Module's loss(y_hat, y): the book's API
    def loss(  # type: ignore[override]
            self, params: Any, X: Any, Y: Any, state: Any, averaged: bool = True) -> Any:
        """Cross-entropy, and the auxiliary data (empty: no mutable state here)."""
        return _loss(self, params, tuple(X), Y, state, averaged)

    def layer_summary(self, X_shape: tuple[int, ...], key: Any = None) -> None:
        """Print each layer's output shape, as the book does."""
        X = jnp.zeros(X_shape)
        params = self.init(get_key() if key is None else key, X)
        bound_model = self.clone().bind(params, mutable=["batch_stats"])
        _ = bound_model(X)
        for layer in bound_model.net.layers:
            X = layer(X)
            print(layer.__class__.__name__, "output shape:\t", X.shape)


# Jitted with the model static, as the book's `partial(jax.jit, static_argnums=(0, 5))`
# methods; module-level functions, so that a reader's subclass may still override the methods.
def _loss(model: Module, params: Any, X: tuple[Any, ...], Y: Any, state: Any,
          averaged: bool) -> Any:
    Y_hat = state.apply_fn({"params": params}, *X, mutable=False,
                           rngs={"dropout": state.dropout_rng})
    Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
    losses = optax.softmax_cross_entropy_with_integer_labels(Y_hat, jnp.reshape(Y, (-1,)))
    return (losses.mean() if averaged else losses), {}


def _accuracy(model: Module, params: Any, X: tuple[Any, ...], Y: Any, state: Any,
              averaged: bool) -> Any:
    Y_hat = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, *X)
    Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
    compare = (Y_hat.argmax(axis=1).astype(Y.dtype) == jnp.reshape(Y, -1)).astype(jnp.float32)
    return compare.mean() if averaged else compare


_loss = jax.jit(_loss, static_argnums=(0, 5))
_accuracy = jax.jit(_accuracy, static_argnums=(0, 5))


# ---- training ----


class TrainState(train_state.TrainState):
    """flax's TrainState with the book's two extra fields."""

    batch_stats: Any
    dropout_rng: jax.Array  # d2l 1.0.3 wrote jax.random.PRNGKeyArray, gone since jax 0.4.24


def _stock(model: Module, method: str) -> bool:
    """Whether `model` uses the Classifier's own `method` (so the fused steps may stand in)."""
    return getattr(type(model), method) is getattr(Classifier, method)


class Trainer(HyperParameters):
    """The base class for training models with data."""

    # Set by save_hyperparameters from the constructor's arguments (the book's API).
    max_epochs: int
    num_gpus: int
    gradient_clip_val: float

    def __init__(self, max_epochs: int, num_gpus: int = 0, gradient_clip_val: float = 0) -> None:
        self.save_hyperparameters()
        self.gpus = [gpu(i) for i in range(min(num_gpus, globals()["num_gpus"]()))]

    def prepare_data(self, data: DataModule) -> None:
        self.train_dataloader = data.train_dataloader()
        self.val_dataloader = data.val_dataloader()
        self.num_train_batches = len(self.train_dataloader)
        self.num_val_batches = len(self.val_dataloader) if self.val_dataloader is not None else 0

    def prepare_model(self, model: Module) -> None:
        model.trainer = self
        model.board.xlim = [0, self.max_epochs]
        self.model = model

    def fit(self, model: Module, data: DataModule, key: Any = None) -> None:
        self.prepare_data(data)
        self.prepare_model(model)
        self.optim = model.configure_optimizers()
        params_key, dropout_key = jax.random.split(get_key() if key is None else key)
        dummy_input = tuple(next(iter(self.train_dataloader))[:-1])
        variables = model.apply_init(dummy_input, key={"params": params_key,
                                                       "dropout": dropout_key})
        self.state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                                       batch_stats=variables.get("batch_stats", {}),
                                       dropout_rng=dropout_key, tx=self.optim)
        fusable = _stock(model, "training_step") and \
            type(self).clip_gradients is Trainer.clip_gradients
        self._train_step = _fused_train_step(model, self.gradient_clip_val) if fusable else None
        self._val_step = _fused_val_step(model) if _stock(model, "validation_step") else None
        self.epoch = 0
        self.train_batch_idx = 0
        self.val_batch_idx = 0
        for self.epoch in range(self.max_epochs):  # noqa: B020 (the book's loop)
            self.fit_epoch()
        model.board.finish()

    def prepare_batch(self, batch: Any) -> Any:
        if self.gpus:
            batch = [jax.device_put(a, self.gpus[0]) for a in batch]
        return batch

    def fit_epoch(self) -> None:
        self.model.training = True
        for batch in self.train_dataloader:
            batch = tuple(self.prepare_batch(batch))
            if self._train_step is not None:  # one jitted call: loss, gradients, update
                self.state, l = self._train_step(self.state, batch)  # noqa: E741
                self.model.plot("loss", l, train=True)
            else:  # the reader's own training_step, as the book runs it
                self.state = self._apply(self.state, *self.model.training_step(
                    self.state.params, batch, self.state))
            self.train_batch_idx += 1
        if self.val_dataloader is None:
            return
        self.model.training = False
        for batch in self.val_dataloader:
            batch = tuple(self.prepare_batch(batch))
            if self._val_step is not None:
                l, acc = self._val_step(self.state, batch)  # noqa: E741
                self.model.plot("loss", l, train=False)
                self.model.plot("acc", acc, train=False)
            else:
                self.model.validation_step(self.state.params, batch, self.state)
            self.val_batch_idx += 1

    def _apply(self, state: TrainState, value: Any, grads: Any) -> TrainState:
        if self.gradient_clip_val > 0:
            grads = self.clip_gradients(self.gradient_clip_val, grads)
        return _update(state, value, grads)

    def clip_gradients(self, grad_clip_val: float, grads: Any) -> Any:
        return _clip(grads, grad_clip_val)


def _clip(grads: Any, clip: float) -> Any:
    """Gradients rescaled to global norm `clip` where it is larger (the book's rule)."""
    norm = optax.global_norm(grads)
    return jax.tree_util.tree_map(lambda g: jnp.where(norm < clip, g, g * (clip / norm)), grads)


def _update(state: TrainState, value: Any, grads: Any) -> TrainState:
    """The book's update after a training step: optimizer, dropout key, BatchNorm stats."""
    state = state.apply_gradients(grads=grads)
    state = state.replace(dropout_rng=jax.random.split(state.dropout_rng)[0])
    if state.batch_stats:  # (loss, {'batch_stats': ...}) from a model with BatchNorm
        state = state.replace(batch_stats=value[1]["batch_stats"])
    return state


def _fused_train_step(model: Module, clip: float) -> Callable[..., Any]:
    """The book's training step and update as one jitted function of (state, batch)."""
    def step(state: TrainState, batch: tuple[Any, ...]) -> tuple[TrainState, jax.Array]:
        value, grads = jax.value_and_grad(model.loss, has_aux=True)(
            state.params, batch[:-1], batch[-1], state)
        return _update(state, value, _clip(grads, clip) if clip > 0 else grads), value[0]

    return jax.jit(step, donate_argnums=0)


def _fused_val_step(model: Module) -> Callable[..., Any]:
    """The book's validation loss and accuracy of a batch, as one jitted function."""
    def step(state: TrainState, batch: tuple[Any, ...]) -> tuple[jax.Array, jax.Array]:
        # A Classifier's loss (fused only where the model keeps the Classifier's steps)
        l, _ = model.loss(  # type: ignore[call-arg]  # noqa: E741
            state.params, batch[:-1], batch[-1], state)
        return l, model.accuracy(state.params, batch[:-1], batch[-1], state)

    return jax.jit(step)
