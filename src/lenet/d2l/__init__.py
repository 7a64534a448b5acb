"""`from lenet import d2l`: the book's d2l API for the LeNet chapter, on lenet's machinery.

A drop-in for `from d2l import torch as d2l` for everything the chapter uses,
in the current edition (Trainer, Classifier, FashionMNIST, ...) and the
previous one (train_ch6, load_data_fashion_mnist, ...). Change that one import
line and the chapter's code runs unchanged, faster, without torchvision.
"""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .classic import (
    Accumulator,
    Timer,
    accuracy,
    evaluate_accuracy_gpu,
    load_data_fashion_mnist,
    size,
    train_ch6,
)
from .core import (
    Classifier,
    DataModule,
    FashionMNIST,
    LeNet,
    Module,
    Trainer,
    cpu,
    get_fashion_mnist_labels,
    gpu,
    init_cnn,
    num_gpus,
    try_all_gpus,
    try_gpu,
)
from .figures import Animator, ProgressBoard, set_axes, set_figsize, show_images, use_svg_display
from .hparams import HyperParameters, add_to_class

__all__ = [
    "Accumulator",
    "Animator",
    "Classifier",
    "DataModule",
    "F",
    "FashionMNIST",
    "HyperParameters",
    "LeNet",
    "Module",
    "ProgressBoard",
    "Timer",
    "Trainer",
    "accuracy",
    "add_to_class",
    "cpu",
    "evaluate_accuracy_gpu",
    "get_fashion_mnist_labels",
    "gpu",
    "init_cnn",
    "load_data_fashion_mnist",
    "nn",
    "np",
    "num_gpus",
    "plt",
    "set_axes",
    "set_figsize",
    "show_images",
    "size",
    "torch",
    "train_ch6",
    "try_all_gpus",
    "try_gpu",
    "use_svg_display",
]


def __getattr__(name: str) -> Any:
    if name == "plt":  # pyplot only when the reader asks for it: importing it picks a backend
        from matplotlib import pyplot

        return pyplot
    raise AttributeError(f"module 'lenet.d2l' has no attribute {name!r}")
