"""What a resumed run may change (where it runs, not what it computes), and the model it
continues: the checkpoint's, never one resolved again from today's registry."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models.config import ModelConfig
from ..training.checkpoint import Payload
from ..training.config import TrainConfig

# Options that may differ when a run is resumed: where it runs and how often it is evaluated,
# not what it trains (evaluating changes no training: tests/run/test_run.py).
RESUMABLE_OVERRIDES = {"device", "threads", "data_dir", "epochs", "eval_every"}


def check_resumable(saved: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that change `saved` (a TrainConfig); only RESUMABLE_OVERRIDES may."""
    changed = {k for k, v in overrides.items() if v is not None and v != getattr(saved, k)}
    if changed - RESUMABLE_OVERRIDES:
        fixed = ", ".join(sorted(changed - RESUMABLE_OVERRIDES))
        allowed = ", ".join(sorted(RESUMABLE_OVERRIDES))
        raise ConfigError(f"cannot change {fixed} when resuming; only {allowed} may change")
    if "epochs" in changed and saved.schedule != "constant":
        raise ConfigError(f"cannot change --epochs of a run with the {saved.schedule!r} schedule: "
                          "its learning rate depends on the total length")
    return {k: overrides[k] for k in changed}


def run_model_config(config: TrainConfig, classes: tuple[str, ...],
                         image_size: tuple[int, int],
                         payload: Payload | None) -> ModelConfig:
    """The model a run trains: its checkpoint's when resuming, else the config's model
    sized for the data's classes and images (TrainConfig.model_config)."""
    if payload is not None:
        return ModelConfig.from_dict(payload["model_config"])
    return config.model_config(num_classes=len(classes), image_size=(image_size[0], image_size[1]))
