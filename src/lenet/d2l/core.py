"""The current edition's API: Module, Classifier, DataModule, FashionMNIST, Trainer, LeNet.

Names, signatures, defaults and hooks are the book's, so its code runs as
written. Underneath, data comes from lenet's verified sources as in-memory
tensors (no workers, no per-image transforms), devices are chosen by lenet,
and losses are read from the device only when a point is plotted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.data import TensorDataset

from ..base import device as devices
from ..data import loader, sources
from ..data.datasets import get_spec
from ..models import summary
from ..models.config import ModelConfig
from ..models.network import LeNet as LeNetNetwork
from ..native import fastpath
from .figures import ProgressBoard, show_images
from .fused import SequentialKernel
from .hparams import HyperParameters

# ---- devices (the book's cpu/gpu helpers; MPS counts as a GPU when there is no CUDA) ----


def cpu() -> torch.device:
    return torch.device("cpu")


def gpu(i: int = 0) -> torch.device:
    return torch.device(f"cuda:{i}")


def _count_gpus() -> int:
    return torch.cuda.device_count()


num_gpus = _count_gpus  # the book's name; Trainer's argument of the same name shadows it


def try_gpu(i: int = 0) -> torch.device:
    """Return gpu(i) if it exists (or MPS for i=0 on a Mac), otherwise cpu()."""
    if num_gpus() >= i + 1:
        return gpu(i)
    if i == 0 and devices.pick_device("auto").type == "mps":
        return torch.device("mps")
    return cpu()


def try_all_gpus() -> list[torch.device]:
    return [gpu(i) for i in range(num_gpus())] or [cpu()]


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return cpu()


# ---- data ----


@functools.lru_cache(maxsize=2)
def fashion_mnist_tensors(data_dir: str | None) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST train and test as CPU tensors, loaded and verified once per process."""
    data = sources.load("fashion-mnist", data_dir)
    cpu_device = cpu()
    return (TensorDataset(*loader.to_tensors(data.train, cpu_device)),
            TensorDataset(*loader.to_tensors(data.test, cpu_device)))


def torchvision_root(root: str | Path) -> str | None:
    """The book keeps data in root/FashionMNIST/raw (torchvision's layout): use it if present."""
    raw = Path(root) / "FashionMNIST" / "raw"
    return str(raw) if raw.is_dir() else None


def in_memory_batches(dataset: TensorDataset, batch_size: int, shuffle: bool,
                      resize: Any = None) -> loader.Batches:
    """A DataLoader stand-in over tensors; its shuffling follows torch's global seed."""
    images, labels = dataset.tensors
    seed = int(torch.randint(0, 2**31 - 1, ())) if shuffle else 0
    size = None if resize is None or tuple(resize) == tuple(images.shape[-2:]) else tuple(resize)
    return loader.Batches(images, labels, batch_size=batch_size, shuffle=shuffle, seed=seed,
                          resize=size)


class DataModule(HyperParameters):
    """The base class of data. `num_workers` is accepted and ignored: no workers are needed."""

    # Set by save_hyperparameters from the constructors' arguments (the book's API).
    root: str
    num_workers: int
    batch_size: int  # a subclass's argument

    def __init__(self, root: str = "../data", num_workers: int = 4) -> None:
        self.save_hyperparameters()

    def get_dataloader(self, train: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        return self.get_dataloader(train=True)

    def val_dataloader(self) -> Any:
        return self.get_dataloader(train=False)

    def get_tensorloader(self, tensors: tuple[torch.Tensor, ...], train: bool,
                         indices: Any = slice(0, None)) -> loader.Batches:
        tensors = tuple(a[indices] for a in tensors)
        return in_memory_batches(TensorDataset(*tensors), self.batch_size, train)


class FashionMNIST(DataModule):
    """The Fashion-MNIST dataset."""

    resize: tuple[int, int]  # set by save_hyperparameters, as batch_size

    def __init__(self, batch_size: int = 64, resize: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train, self.val = fashion_mnist_tensors(torchvision_root(self.root))

    def text_labels(self, indices: Any) -> list[str]:
        """Return text labels."""
        return get_fashion_mnist_labels(indices)

    def get_dataloader(self, train: bool) -> loader.Batches:
        data = self.train if train else self.val
        return in_memory_batches(data, self.batch_size, shuffle=train, resize=self.resize)

    def visualize(self, batch: Any, nrows: int = 1, ncols: int = 8, labels: Any = ()) -> None:
        X, y = batch
        if not labels:
            labels = self.text_labels(y)
        show_images(X.squeeze(1), nrows, ncols, titles=labels)


def get_fashion_mnist_labels(labels: Any) -> list[str]:
    """Return text labels for the Fashion-MNIST dataset (the book's short names)."""
    names = [name.split("/")[0] for name in get_spec("fashion-mnist").classes]
    return [names[int(i)] for i in labels]


# ---- models ----


class Module(nn.Module, HyperParameters):
    """The base class of models."""

    # The book's own Sequential `net` on the fused kernel, set by Trainer.prepare_model
    # where it fits (a lenet LeNet as `net` has its own); None: `net` as it is.
    fused_net: SequentialKernel | None = None
    # Set by save_hyperparameters (the book's API), by a subclass, or by the trainer:
    plot_train_per_epoch: int
    plot_valid_per_epoch: int
    lr: float  # a subclass's argument
    net: nn.Module  # a subclass's network
    trainer: Trainer  # Trainer.prepare_model

    def __init__(self, plot_train_per_epoch: int = 2, plot_valid_per_epoch: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.board = ProgressBoard()

    def loss(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        assert hasattr(self, "net"), "Neural network is defined"
        return (self.fused_net or self.net)(X)

    def plot(self, key: str, value: torch.Tensor, train: bool) -> None:
        """Plot a point in animation."""
        assert hasattr(self, "trainer"), "Trainer is not inited"
        self.board.xlabel = "epoch"
        if train:
            x = self.trainer.train_batch_idx / self.trainer.num_train_batches
            n = self.trainer.num_train_batches / self.plot_train_per_epoch
        else:
            x = self.trainer.epoch + 1
            n = self.trainer.num_val_batches / self.plot_valid_per_epoch
        # The value stays on its device: the board reads it when it plots.
        self.board.draw(x, value.detach(), ("train_" if train else "val_") + key,
                        every_n=max(int(n), 1))

    def training_step(self, batch: list[torch.Tensor]) -> torch.Tensor:
        l = self.loss(self(*batch[:-1]), batch[-1])  # noqa: E741 (the book's name)
        self.plot("loss", l, train=True)
        return l

    def validation_step(self, batch: list[torch.Tensor]) -> None:
        l = self.loss(self(*batch[:-1]), batch[-1])  # noqa: E741
        self.plot("loss", l, train=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def apply_init(self, inputs: list[torch.Tensor], init: Any = None) -> None:
        """Run `inputs` through the model (materialising lazy layers), then apply `init`."""
        self.forward(*[x.to(_device_of(self)) for x in inputs])
        if init is not None:
            self.net.apply(init)


class Classifier(Module):
    """The base class of classification models."""

    def validation_step(self, batch: list[torch.Tensor]) -> None:
        Y_hat = self(*batch[:-1])
        self.plot("loss", self.loss(Y_hat, batch[-1]), train=False)
        self.plot("acc", self.accuracy(Y_hat, batch[-1]), train=False)

    def accuracy(self, Y_hat: torch.Tensor, Y: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        """Compute the number of correct predictions."""
        Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
        preds = Y_hat.argmax(dim=1).type(Y.dtype)
        compare = (preds == Y.reshape(-1)).type(torch.float32)
        return compare.mean() if averaged else compare

    def loss(self, Y_hat: torch.Tensor, Y: torch.Tensor, averaged: bool = True) -> torch.Tensor:
        Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
        Y = Y.reshape((-1,))
        return F.cross_entropy(Y_hat, Y, reduction="mean" if averaged else "none")

    def layer_summary(self, X_shape: tuple[int, ...]) -> None:
        """Print each layer's output shape, as the book does."""
        for row in summary.summarize(self.net, X_shape):
            print(row.kind, "output shape:\t", torch.Size(row.output_shape))


def init_cnn(module: nn.Module) -> None:
    """Initialize weights for CNNs."""
    if type(module) is nn.Linear or type(module) is nn.Conv2d:
        nn.init.xavier_uniform_(module.weight)


class LeNet(Classifier):
    """The LeNet-5 model, built from lenet's explicit-size layers."""

    def __init__(self, lr: float = 0.1, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = LeNetNetwork(ModelConfig(num_classes=num_classes))


# ---- training ----


class Trainer(HyperParameters):
    """The base class for training models with data."""

    # Set by save_hyperparameters from the constructor's arguments (the book's API).
    max_epochs: int
    num_gpus: int
    gradient_clip_val: float

    def __init__(self, max_epochs: int, num_gpus: int = 0, gradient_clip_val: float = 0) -> None:
        self.save_hyperparameters()
        self.gpus = [gpu(i) for i in range(min(num_gpus, _count_gpus()))]
        if num_gpus and not self.gpus and try_gpu().type == "mps":
            self.gpus = [torch.device("mps")]

    @property
    def device(self) -> torch.device:
        return self.gpus[0] if self.gpus else cpu()

    def prepare_data(self, data: DataModule) -> None:
        self.train_dataloader = data.train_dataloader()
        self.val_dataloader = data.val_dataloader()
        for batches in (self.train_dataloader, self.val_dataloader):
            if isinstance(batches, loader.Batches):
                batches.to(self.device)  # once, instead of every batch
        self.num_train_batches = len(self.train_dataloader)
        self.num_val_batches = len(self.val_dataloader) if self.val_dataloader is not None else 0

    def prepare_model(self, model: Module) -> None:
        model.trainer = self
        model.board.xlim = [0, self.max_epochs]
        if any(is_lazy(p) for p in model.parameters()):
            model.to(self.device)  # shapes unknown yet: no layout change
        else:
            fastpath.prepare_model(model, self.device)
            net = getattr(model, "net", None)
            model.fused_net = SequentialKernel.of(net) if self.device.type == "cpu" else None
        self.model = model

    def fit(self, model: Module, data: DataModule) -> None:
        self.prepare_data(data)
        self.prepare_model(model)
        self.optim = model.configure_optimizers()
        self.epoch = 0
        self.train_batch_idx = 0
        self.val_batch_idx = 0
        for self.epoch in range(self.max_epochs):  # noqa: B020 (the book's loop)
            self.fit_epoch()
        model.board.finish()

    def prepare_batch(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.gpus:
            batch = [a.to(self.gpus[0]) for a in batch]  # a no-op for in-memory batches
        return batch

    def fit_epoch(self) -> None:
        self.model.train()
        for batch in self.train_dataloader:
            loss = self.model.training_step(self.prepare_batch(batch))
            self.optim.zero_grad()
            with torch.no_grad():
                loss.backward()
                if self.gradient_clip_val > 0:
                    self.clip_gradients(self.gradient_clip_val, self.model)
                self.optim.step()
            self.train_batch_idx += 1
        if self.val_dataloader is None:
            return
        self.model.eval()
        for batch in self.val_dataloader:
            with torch.no_grad():
                self.model.validation_step(self.prepare_batch(batch))
            self.val_batch_idx += 1

    def clip_gradients(self, grad_clip_val: float, model: nn.Module) -> None:
        # The book's rescaling to norm grad_clip_val, without its per-step host sync.
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                 grad_clip_val)
