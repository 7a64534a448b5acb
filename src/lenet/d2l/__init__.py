"""`from lenet import d2l`: the book's d2l API for the LeNet chapter, on lenet's machinery.

A drop-in for `from d2l import torch as d2l` for everything the chapter uses,
in the current edition (Trainer, Classifier, FashionMNIST, ...) and the
previous one (train_ch6, load_data_fashion_mnist, ...). Change that one import
line and the chapter's code runs unchanged, faster, without torchvision.

The chapter's other tabs are submodules: `from lenet.d2l import jax as d2l`
and `from lenet.d2l import tensorflow as d2l`. Names load on first use, so
importing those (which imports this package first) never imports torch.
"""

from importlib import import_module
from typing import Any

# public name -> (module, name in it); a module starting with "." is one of ours
_EXPORTS = {
    **{name: (".classic", name) for name in (
        "Accumulator", "Timer", "accuracy", "evaluate_accuracy_gpu", "load_data_fashion_mnist",
        "size", "train_ch6")},
    **{name: (".core", name) for name in (
        "Classifier", "DataModule", "FashionMNIST", "LeNet", "Module", "Trainer", "cpu",
        "get_fashion_mnist_labels", "gpu", "init_cnn", "num_gpus", "try_all_gpus", "try_gpu")},
    **{name: (".figures", name) for name in (
        "Animator", "ProgressBoard", "set_axes", "set_figsize", "show_images",
        "use_svg_display")},
    **{name: (".hparams", name) for name in ("HyperParameters", "add_to_class")},
    "np": ("numpy", None), "torch": ("torch", None), "nn": ("torch.nn", None),
    "F": ("torch.nn.functional", None),
    # pyplot only when the reader asks for it: importing it picks a backend
    "plt": ("matplotlib.pyplot", None),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet.d2l' has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = import_module(module_name, __name__) if module_name.startswith(".") \
        else import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    if name != "plt":  # later look-ups skip this function (pyplot stays on demand)
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *globals()})
