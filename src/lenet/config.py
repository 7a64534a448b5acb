"""The training recipe and run options, as one frozen, validated dataclass.

The defaults are the book's current recipe (`d2l.Trainer(max_epochs=10)`,
`FashionMNIST(batch_size=128)`, `LeNet(lr=0.1)`): LeNet-5, minibatch SGD with
learning rate 0.1, batch 128, 10 epochs, cross-entropy, Xavier init.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .datasets import DATASETS
from .errors import ConfigError
from .models import MODELS

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "one-cycle")
AUGMENTATIONS = (None, "flip", "shift", "flip+shift")
PRECISIONS = ("fp32", "bf16", "fp16")


# Named recipes: option values that `--recipe NAME` sets before any explicit option.
RECIPES: dict[str, dict[str, Any]] = {
    # The book's current edition (the defaults): LeNet-5, SGD lr 0.1, batch 128, 10 epochs.
    "book": {},
    # The chapter's modernised LeNet with a good optimizer: 0.907 test accuracy in 10 epochs.
    "modern": {"model": "lenet5-modern", "lr": 0.05, "momentum": 0.9, "nesterov": True,
               "schedule": "cosine", "weight_decay": 5e-4},
    # The least wall time to 0.90 test accuracy we found on 2 CPU cores: the modern LeNet
    # with batch norm (all in the fused native kernel), batch 192, a 2-epoch one-cycle
    # schedule: 0.9029-0.9066 over seeds 0-3, about 12 s for the whole command
    # (lenet bench, part 4).
    "fast": {"model": "lenet5-modern", "model_settings": {"batch_norm": "true"},
             "batch_size": 192, "lr": 0.3, "momentum": 0.9, "nesterov": True,
             "schedule": "one-cycle", "epochs": 2},
    # The best under 100,000 parameters: 0.928 test accuracy in 20 epochs.
    "best-under-100k": {"model": "lenet-100k", "epochs": 20, "lr": 0.1, "momentum": 0.9,
                        "nesterov": True, "weight_decay": 5e-4, "schedule": "one-cycle",
                        "augment": "flip+shift"},
}


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "book"  # the named recipe these options started from
    model: str = "lenet5"
    model_settings: dict[str, str] = field(default_factory=dict)  # --set KEY=VALUE
    dataset: str = "fashion-mnist"  # a known name, or a directory of IDX files
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    clip_grad: float | None = None  # max global gradient norm
    seed: int = 0
    val_split: float | None = None  # hold out this fraction of train instead of using test
    resize: tuple[int, int] | None = None
    augment: str | None = None  # "flip", "shift" or "flip+shift", applied per batch
    precision: str = "fp32"  # "bf16"/"fp16": autocast matmuls and convolutions (tensor cores)
    target_accuracy: float | None = None  # stop after the first epoch that reaches it
    eval_batch_size: int = 1024
    # Where and how to run: recorded, but they do not change what is computed.
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    out_dir: str = "runs"
    name: str | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.recipe in RECIPES,
             f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        need(self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        need(self.dataset in DATASETS or Path(self.dataset).is_dir(),
             f"unknown dataset {self.dataset!r}: not one of {', '.join(DATASETS)} "
             "and not a directory of IDX files")
        need(self.augment in AUGMENTATIONS,
             f"unknown augmentation {self.augment!r}; choose from "
             f"{', '.join(a for a in AUGMENTATIONS if a)}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0,
             f"--lr must be a positive number, got {self.lr}")
        need(self.optimizer in OPTIMIZERS,
             f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES,
             f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        need(0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}")
        need(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
             "--nesterov needs --optimizer sgd and a --momentum above 0")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(self.clip_grad is None or self.clip_grad > 0,
             f"--clip-grad must be > 0, got {self.clip_grad}")
        need(self.val_split is None or 0.0 < self.val_split < 1.0,
             f"--val-split must be between 0 and 1, got {self.val_split}")
        need(self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 1),
             f"--resize must be two positive sizes, got {self.resize}")
        need(self.precision in PRECISIONS,
             f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        need(self.target_accuracy is None or 0 < self.target_accuracy <= 1,
             f"--target-accuracy must be in (0, 1], got {self.target_accuracy}")
        need(self.threads is None or self.threads >= 1,
             f"--threads must be >= 1, got {self.threads}")

    @classmethod
    def from_recipe(cls, recipe: str = "book", **options: Any) -> TrainConfig:
        """The recipe's values, then `options` on top."""
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        values = {**RECIPES[recipe], **options}
        settings = {**RECIPES[recipe].get("model_settings", {}),
                    **options.get("model_settings", {})}
        return cls(recipe=recipe, **{**values, "model_settings": settings})

    @property
    def eval_name(self) -> str:
        return "val" if self.val_split else "test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        values["model_settings"] = dict(values.get("model_settings") or {})
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)
