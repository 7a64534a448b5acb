"""The book's `save_hyperparameters` and `add_to_class`.

This is the one place where lenet inspects call frames: the book's API records
a constructor's arguments as attributes without naming them, and the reader's
code depends on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any


def add_to_class(Class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a method of `Class`."""
    def wrapper(obj: Callable[..., Any]) -> Callable[..., Any]:
        setattr(Class, obj.__name__, obj)
        return obj
    return wrapper


class HyperParameters:
    """The base class of hyperparameters."""

    def save_hyperparameters(self, ignore: Iterable[str] = ()) -> None:
        """Save the calling `__init__`'s arguments into `self.hparams` and as attributes."""
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None  # the caller's __init__
        assert caller is not None, "save_hyperparameters needs CPython's call frames"
        _, _, _, local_vars = inspect.getargvalues(caller)
        skip = {*ignore, "self"}
        self.hparams: dict[str, Any] = {
            k: v for k, v in local_vars.items()
            if k not in skip and not k.startswith("_")
        }
        for k, v in self.hparams.items():
            setattr(self, k, v)
