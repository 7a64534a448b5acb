"""The training recipe and run options, as one frozen, validated dataclass.

The defaults are the book's current recipe (`d2l.Trainer(max_epochs=10)`,
`FashionMNIST(batch_size=128)`, `LeNet(lr=0.1)`): LeNet-5, minibatch SGD with
learning rate 0.1, batch 128, 10 epochs, cross-entropy, Xavier init.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from ..base.names import check_name
from ..data.datasets import DATASETS, evaluation_split
from ..errors import ConfigError
from ..models.config import MODELS, ModelConfig
from ..models.settings import ModelSettings, resolve_model_config

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "one-cycle")
# None, or some of the loader's augmentations joined by + in this order: "flip+shift", ...
AUGMENTATION_PARTS = ("flip", "shift", "erase")
AUGMENTATIONS = (None, *("+".join(parts) for k in range(1, len(AUGMENTATION_PARTS) + 1)
                         for parts in itertools.combinations(AUGMENTATION_PARTS, k)))
PRECISIONS = ("fp32", "bf16", "fp16")
# the fused kernel's products: float32, or bfloat16 where the CPU has AVX512-BF16
CONV_PRECISIONS = ("ieee", "bf16")
TEST_TIME_AUGMENTATIONS = (None, "flip", "flip+shift")  # lenet.data.loader.tta_views


# Named recipes: option values that `--recipe NAME` sets before any explicit option. Most
# keep OOD_HOLDOUT training images out of training, to calibrate the out-of-distribution
# thresholds on images the model never saw (lenet.ood.calibration); the book's trains on
# every image, so its figures stay the book's, and so do the speed and classic records.
OOD_HOLDOUT = 2000
RECIPES: dict[str, dict[str, Any]] = {
    # The book's current edition (the defaults): LeNet-5, SGD lr 0.1, batch 128, 10 epochs.
    "book": {},
    # The chapter's modernised LeNet with a good optimizer: 0.907 test accuracy in 10 epochs.
    "modern": {"model": "lenet5-modern", "lr": 0.05, "momentum": 0.9, "nesterov": True,
               "schedule": "cosine", "weight_decay": 5e-4, "ood_holdout": OOD_HOLDOUT},
    # The least wall time to 0.90 test accuracy we found on 2 CPU cores: the modern LeNet
    # with batch norm (all in the fused native kernel), batch 192, a 2-epoch one-cycle
    # schedule: 0.9029-0.9066 over seeds 0-3, about 12 s for the whole command
    # (lenet bench, part 4).
    "fast": {"model": "lenet5-modern", "model_settings": ModelSettings(batch_norm=True),
             "batch_size": 192, "lr": 0.3, "momentum": 0.9, "nesterov": True,
             "schedule": "one-cycle", "epochs": 2, "ood_holdout": OOD_HOLDOUT},
    # The records (benchmarks/records.py: mean over seeds, last epoch's test accuracy; each
    # found on a validation slice by its sweep file under sweeps/).
    # The time ladder: the fused kernel's shapes (ReLU, max-pooling, batch norm).
    # speed-90 evaluates once, after its last epoch (the figure; epoch 1's would cost 2%).
    # Batch 256 at lr 0.6 is as accurate as 128 at 0.45 (val, 10 seeds) in half the steps;
    # bfloat16 products where the CPU has AVX512-BF16 (float32 elsewhere); the first conv
    # block frozen for the last 40% of the steps (as accurate, its backward pass skipped).
    "speed-90": {"model": "lenet5-modern", "model_settings": ModelSettings(batch_norm=True),
                 "batch_size": 256, "lr": 0.6, "momentum": 0.9, "nesterov": True,
                 "schedule": "one-cycle", "epochs": 2, "eval_every": 2,
                 "conv_precision": "bf16", "freeze_first_block": 0.6},
    # Wider dense layers than LeNet-5's 120-84 (233,602 parameters): as accurate in 7 epochs
    # as 512-256 in 8, in 0.77x the time (sweeps/speed-92.toml).
    "speed-92": {"model": "lenet5-modern",
                 "model_settings": ModelSettings(batch_norm=True, dense=(384, 192)),
                 "batch_size": 128, "lr": 0.2, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 5e-4, "schedule": "one-cycle", "epochs": 7,
                 "augment": "flip", "tta": "flip"},
    "speed-93": {"model": "lenet5-modern",
                 "model_settings": ModelSettings(batch_norm=True, dense=(512, 256)),
                 "batch_size": 128, "lr": 0.2, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 5e-4, "schedule": "one-cycle", "epochs": 24,
                 "augment": "flip", "tta": "flip"},
    # The exact LeNet-5 (sigmoid, average pooling, no layer changed), 10 epochs: a small
    # batch and a high peak rate for its slow sigmoid layers, mirror images in training and
    # at test time.
    "classic-best": {"model": "lenet5", "batch_size": 64, "lr": 0.8, "momentum": 0.9,
                     "nesterov": True, "schedule": "one-cycle", "epochs": 10,
                     "augment": "flip", "tta": "flip"},
    # The best with LeNet-5's budget (<= 62,000 parameters): three 3x3 convolutions with
    # batch norm (16, 32, 64), one dense layer of 64; 61,226 parameters. Evaluated every 5
    # epochs: its two-view evaluation on PyTorch's layers is a sizeable share of an epoch.
    "best-62k": {"model": "lenet5-modern",
                 "model_settings": ModelSettings(batch_norm=True, channels=(16, 32, 64),
                                                 kernel_sizes=(3,), paddings=("same",),
                                                 dense=(64,), dropout=0.2),
                 "epochs": 20, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 5e-4, "schedule": "one-cycle", "augment": "flip+shift",
                 "tta": "flip", "eval_every": 5, "ood_holdout": OOD_HOLDOUT},
    # The best under 100,000 parameters (sweeps/best-under-100k.toml) for 60 epochs, with
    # flip+shift test-time augmentation (sweeps/best-100k.toml: validation 0.9455 at 60 epochs,
    # 0.9375 at 40), evaluated every 10 epochs: six views of each test image cost a quarter
    # to two fifths of its time when evaluated after every epoch.
    "best-100k": {"model": "lenet-100k", "epochs": 60, "lr": 0.1, "momentum": 0.9,
                  "nesterov": True, "weight_decay": 5e-4, "schedule": "one-cycle",
                  "augment": "flip+shift", "tta": "flip+shift", "eval_every": 10,
                  "ood_holdout": OOD_HOLDOUT},
}
RECIPES["best-under-100k"] = RECIPES["best-100k"]  # its first name: an alias


class _FromRecipe:
    def __repr__(self) -> str:
        return "<the recipe's value>"


FROM_RECIPE: Any = _FromRecipe()  # a recipe option not given: the named recipe decides
UNCHANGED = ModelSettings()  # the model variant as registered


def recipe_option(book: Any) -> Any:
    """A field that `--recipe` may set: the recipe's value when it names one, else `book`."""
    return field(default=FROM_RECIPE, metadata={"book": book})


@dataclass(frozen=True)
class TrainConfig:
    """What a run computes (the recipe) and where it runs.

    `TrainConfig(recipe="fast", epochs=5)` is the fast recipe's values with 5
    epochs; options not given come from the recipe, then from the book's (the
    values in `recipe_option(...)`). Model settings are changes on top of the
    recipe's; a mapping (as JSON stores them, or `--set` text) is parsed.
    """

    recipe: str = "book"  # the named recipe these options started from
    model: str = recipe_option("lenet5")
    model_settings: ModelSettings = recipe_option(UNCHANGED)  # noqa: RUF009 (a field())
    dataset: str = recipe_option("fashion-mnist")  # a known name, or a directory of IDX files
    epochs: int = recipe_option(10)
    batch_size: int = recipe_option(128)
    lr: float = recipe_option(0.1)
    optimizer: str = recipe_option("sgd")
    momentum: float = recipe_option(0.0)
    nesterov: bool = recipe_option(False)
    weight_decay: float = recipe_option(0.0)
    schedule: str = recipe_option("constant")
    clip_grad: float | None = recipe_option(None)  # max global gradient norm
    seed: int = recipe_option(0)
    val_split: float | None = recipe_option(None)  # hold out this fraction of train, not test
    resize: tuple[int, int] | None = recipe_option(None)
    augment: str | None = recipe_option(None)  # "flip", "shift", "erase", joined by +; per batch
    label_smoothing: float = recipe_option(0.0)  # the training loss's targets: 1-e and e/classes
    # "flip": evaluate on each image and its mirror image; "flip+shift": and on both moved
    # one pixel up-left and down-right (lenet.data.loader.tta_views)
    tta: str | None = recipe_option(None)
    precision: str = recipe_option("fp32")  # "bf16"/"fp16": autocast convolutions and matmuls
    # "bf16": float32 tensors, but in training steps the fused kernel's convolutions multiply
    # bfloat16 roundings (sums in float32) where the CPU has AVX512-BF16, as PyTorch's
    # fp32_precision allows; evaluation multiplies in float32
    conv_precision: str = recipe_option("ieee")
    # FreezeOut: after this share of the steps the first conv block (conv1, bn1) stops
    # learning, and its gradients are no longer computed (lenet.training.freeze); 1: never
    freeze_first_block: float | None = recipe_option(None)
    target_accuracy: float | None = recipe_option(None)  # stop after the first epoch reaching it
    # Evaluate after every N-th epoch and after the last (Keras's validation_freq): the other
    # epochs' rows have no test (or val) figures. Evaluation with test-time augmentation can
    # cost a third of an epoch.
    eval_every: int = recipe_option(1)
    # Evaluation batch; None: by the model's path (lenet.native.fastpath.evaluation_batch:
    # 1,024 with the fused kernel or on a GPU, 256 for PyTorch's convolutions on a CPU)
    eval_batch_size: int | None = recipe_option(None)
    # Training images kept out of training to calibrate the OOD detectors' thresholds on
    # (lenet.ood.calibration); 0 trains on all of them and calibrates on seen images.
    ood_holdout: int = recipe_option(0)
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
        recipe = RECIPES[self.recipe]
        for f in fields(self):
            if getattr(self, f.name) is FROM_RECIPE:
                object.__setattr__(self, f.name, recipe.get(f.name, f.metadata["book"]))
        _check_types(self)
        settings = self.model_settings
        if not isinstance(settings, ModelSettings):
            if not isinstance(settings, Mapping):
                raise ConfigError(f"model settings must be a mapping, got {settings!r:.60}")
            settings = ModelSettings.from_dict(settings)
        base = recipe.get("model_settings", UNCHANGED)
        object.__setattr__(self, "model_settings", base.updated(settings))
        need(self.model in MODELS, f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        # A wrong number of per-layer values is refused now, before any data is read; the
        # shapes are checked when the data's image size is known (model_config).
        self.model_settings.layers(MODELS[self.model])
        need(self.dataset in DATASETS or Path(self.dataset).is_dir(),
             f"unknown dataset {self.dataset!r}: not one of {', '.join(DATASETS)} "
             "and not a directory of IDX files")
        need(self.augment in AUGMENTATIONS,
             f"unknown augmentation {self.augment!r}; choose from "
             f"{', '.join(a for a in AUGMENTATIONS if a)}")
        need(self.tta in TEST_TIME_AUGMENTATIONS,
             f"unknown test-time augmentation {self.tta!r}; choose from "
             f"{', '.join(a for a in TEST_TIME_AUGMENTATIONS if a)}")
        need(0.0 <= self.label_smoothing < 1.0,
             f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"eval batch size must be >= 1, got {self.eval_batch_size}")
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
        need(self.conv_precision in CONV_PRECISIONS,
             f"unknown convolution precision {self.conv_precision!r}; choose from "
             f"{', '.join(CONV_PRECISIONS)}")
        need(self.freeze_first_block is None or 0.0 < self.freeze_first_block <= 1.0,
             "--freeze-first-block must be above 0 and at most 1 (never), got "
             f"{self.freeze_first_block}")
        need(self.target_accuracy is None or 0 < self.target_accuracy <= 1,
             f"--target-accuracy must be in (0, 1], got {self.target_accuracy}")
        need(self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}")
        need(self.ood_holdout >= 0, f"--ood-holdout must be >= 0, got {self.ood_holdout}")
        need(self.threads is None or self.threads >= 1,
             f"--threads must be >= 1, got {self.threads}")
        if self.name is not None:
            check_name(self.name, "run name (--name)")

    @classmethod
    def from_recipe(cls, recipe: str = "book", **options: Any) -> TrainConfig:
        """The recipe's values, then `options` on top (the same as `TrainConfig(recipe, ...)`)."""
        return cls(recipe=recipe, **options)

    @property
    def eval_name(self) -> str:
        """The split evaluated after each epoch: "test", or "val" with --val-split."""
        return evaluation_split(self.val_split)

    def model_config(self, *, num_classes: int | None = None,
                     image_size: tuple[int, int] | None = None) -> ModelConfig:
        """The model this config trains, sized for data with `num_classes` classes and
        images of `image_size` (or --resize's size)."""
        return resolve_model_config(self.model, self.model_settings, num_classes=num_classes,
                                    input_size=self.resize or image_size)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_settings": self.model_settings.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from `to_dict`'s form (config.json, checkpoints), older runs' included."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        values.setdefault("ood_holdout", 0)  # runs from before it trained on every image
        values.setdefault("conv_precision", "ieee")  # and multiplied in float32
        values.setdefault("freeze_first_block", None)  # and froze nothing
        values["model_settings"] = dict(values.get("model_settings") or {})
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def _check_types(config: TrainConfig) -> None:
    """Each option of the type its field says (values from TOML or JSON may be anything);
    an int is a float here, a bool is not an int."""
    hints = get_type_hints(TrainConfig)
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        kinds = tuple(k for k in get_args(hint) or (hint,) if k is not type(None))
        if (value is None and type(None) in get_args(hint)) or f.name == "model_settings":
            continue
        if float in kinds:
            kinds = (float, int)
        if get_origin(kinds[0]) is tuple:  # resize: (H, W) whole numbers
            ok = isinstance(value, tuple) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if not ok:
            words = " or ".join(_TYPE_WORDS.get(k, "two whole numbers (H, W)") for k in kinds)
            raise ConfigError(f"option {f.name} must be {words}, got {value!r:.60}")


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
