"""What is computed: a model's configuration (config.py, torch-free), `--set` settings
(settings.py), the network (network.py), its summary and diagram.

`lenet.models.ModelConfig`, `MODELS`, `LeNet` and `build_model` load on first use, so
reading a configuration imports no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"ModelConfig": "config", "MODELS": "config", "get_model_config": "config",
            "LeNet": "network", "build_model": "network"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet.models' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
