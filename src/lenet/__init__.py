"""lenet: build, train, inspect and ship LeNet-family CNNs on Fashion-MNIST and MNIST."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `lenet.load` without importing torch for `import lenet` alone.
    if name == "load":
        from .inference import load

        return load
    raise AttributeError(f"module 'lenet' has no attribute {name!r}")
