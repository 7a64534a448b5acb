"""lenet: build, train, inspect and ship LeNet-family CNNs on Fashion-MNIST and MNIST.

The public API is what `__all__` lists (docs/how-to/python.md shows it in use); other
modules are lenet's own rooms and may change. Names load on first use, so
`import lenet` stays fast and imports no torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Run": "run.record", "RunResult": "run.fit", "StopRequest": "run.stop",
    "Activations": "run.record", "ScoreDetector": "run.record",
    "TrainConfig": "training.config", "RECIPES": "training.config",
    "ModelConfig": "models.config", "MODELS": "models.config", "LeNet": "models.network",
    "build_model": "models.network",
    "load": "predict.predictor", "Predictor": "predict.predictor",
    "Prediction": "predict.predictor",
    "DATASETS": "data.datasets", "load_dataset": "data.sources", "Dataset": "data.sources",
    "Split": "data.sources",
    "Evaluation": "predict.evaluation",
    "Sink": "run.events", "OnlyIf": "run.events",
    "Console": "run.console",
    "LenetError": "errors", "ConfigError": "errors", "DataError": "errors",
    "TrainingError": "errors",
}
_ALIASES = {"load_dataset": "load"}  # public name -> name inside its module

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), _ALIASES.get(name, name))
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
