"""Changes to a registered model, typed: what `--set KEY=VALUE` and a sweep's `set.KEY` say.

`ModelSettings` has one field per setting, each with its type and range; a
field left at None keeps the variant's value. Text from the command line, typed
values from a TOML sweep, and the strings that older runs stored in config.json
and checkpoints are all parsed against those types, so a wrong type, a wrong
length or an unknown key is refused with one line that says what was expected.

This module knows nothing of torch: `network.py` builds from what it resolves.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import ConfigError
from .config import Activation, Init, ModelConfig, Pool, get_model_config

SAME = "same"  # padding kernel // 2: a map keeps its size until pooling


def _at_least(low: float) -> Any:
    return field(default=None, metadata={"min": low})


@dataclass(frozen=True, repr=False)
class ModelSettings:
    """Changes to a model variant; None keeps the variant's value.

    Per-layer values (`kernel_sizes`, `paddings`) take one value for every
    convolution or one per convolution; `channels` sets how many there are.
    """

    activation: Activation | None = None
    pool: Pool | None = None
    pool_size: int | None = _at_least(1)
    channels: tuple[int, ...] | None = _at_least(1)  # one per convolution
    kernel_sizes: tuple[int, ...] | None = _at_least(1)
    paddings: tuple[int | Literal["same"], ...] | None = _at_least(0)
    dense: tuple[int, ...] | None = _at_least(1)  # hidden widths; () for none
    batch_norm: bool | None = None
    dropout: float | None = field(default=None, metadata={"min": 0.0, "below": 1.0})
    init: Init | None = None
    num_classes: int | None = _at_least(1)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, _convert(f.name, value))

    def __repr__(self) -> str:
        return f"ModelSettings({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSettings:
        """Settings from `{key: value}`: values typed (TOML, JSON) or text (the command line,
        older runs' records); keys may be the aliases of `--set` (`kernel`, `bn`, ...)."""
        return cls(**{_field_name(key): value for key, value in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """The settings that are set, by field name (what config.json and checkpoints keep)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def to_args(self) -> list[str]:
        """The settings as `--set` would take them: ['channels=16,32', 'batch_norm=true']."""
        return [f"{SPELLINGS.get(key, key)}={_text(value)}"
                for key, value in self.to_dict().items()]

    def updated(self, other: ModelSettings) -> ModelSettings:
        """These settings with `other`'s on top."""
        return dataclasses.replace(self, **other.to_dict())

    def apply(self, config: ModelConfig, **fixed: Any) -> ModelConfig:
        """`config` with these settings, then the `fixed` fields (what the data decides:
        num_classes, input_size); the result is validated once, as a whole.

        Per-layer values broadcast to every convolution (see `layers`).
        """
        kernels, paddings = self.layers(config)
        values = {**self.to_dict(), "kernel_sizes": kernels, "paddings": paddings, **fixed}
        return dataclasses.replace(config, **values)  # ModelConfig checks the whole

    def layers(self, config: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(kernel sizes, paddings) of the convolutions these settings give `config`.

        One value applies to every convolution; otherwise there must be one per
        convolution (`channels` says how many). When the number of convolutions
        changes, or the kernel does, and no padding is given, each convolution
        uses 'same' padding (kernel // 2).
        """
        values = self.to_dict()
        n = len(values.get("channels", config.channels))
        kernels = values.get("kernel_sizes")
        if kernels is not None:
            kernels = _per_layer("kernel_sizes", kernels, n)
        elif n != len(config.channels):
            kernels = (config.kernel_sizes[0],) * n
        else:
            kernels = config.kernel_sizes
        paddings = values.get("paddings")
        if paddings is not None:
            paddings = _per_layer("paddings", paddings, n)
        elif n != len(config.channels) or "kernel_sizes" in values:
            paddings = (SAME,) * n
        else:
            paddings = config.paddings
        return kernels, tuple(k // 2 if p == SAME else p
                              for p, k in zip(paddings, kernels, strict=True))


def parse_settings(items: Iterable[str]) -> ModelSettings:
    """['activation=relu', 'channels=16,32'] (the `--set` options) -> ModelSettings."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set activation=relu")
        values[_field_name(key)] = value
    return ModelSettings.from_dict(values)


# How `--set` spells some fields (the chapter's exercise words), and other accepted keys.
SPELLINGS = {"kernel_sizes": "kernel", "paddings": "padding", "num_classes": "classes"}
ALIASES = {"kernels": "kernel_sizes", "bn": "batch_norm", **{v: k for k, v in SPELLINGS.items()}}


def setting_names() -> list[str]:
    """The keys `--set` takes, as the user types them (field names also work)."""
    return [SPELLINGS.get(f.name, f.name) for f in fields(ModelSettings)]


def _field_name(key: str) -> str:
    name = key.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in {f.name for f in fields(ModelSettings)}:
        raise ConfigError(f"--set {key.strip()}: unknown setting; choose from "
                          f"{', '.join(setting_names())}")
    return name


def _per_layer(name: str, values: tuple[Any, ...], n: int) -> tuple[Any, ...]:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"--set {SPELLINGS.get(name, name)}={_text(values)}: {len(values)} "
                          f"values for {n} "
                          f"convolution layers; give one value for all, or one per layer "
                          f"(the number of channels sets the layers)")
    return values


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(name: str, value: Any) -> Any:
    """`value` as the type of setting `name`, in its range; a ConfigError says what was wanted."""
    hint, meta = _HINTS[name], _RANGES[name]
    where = f"--set {SPELLINGS.get(name, name)}={_text(value)}"
    try:
        result = _as(hint, value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {_describe(hint)}") from None
    for item in result if isinstance(result, tuple) else (result,):
        if isinstance(item, str):
            continue
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{where}: must be at least {meta['min']}")
        if "below" in meta and item >= meta["below"]:
            raise ConfigError(f"{where}: must be below {meta['below']}")
    return result


def _as(hint: Any, value: Any) -> Any:
    """`value` (text, or a typed value) as type `hint`; TypeError/ValueError if it is not one."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [h for h in get_args(hint) if h is not type(None)]
        for option in options:
            try:
                return _as(option, value)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if origin is tuple:
        item = get_args(hint)[0]
        if isinstance(value, str):  # "16,32" or "16x32"; "" is the empty tuple
            value = [v for v in re.split(r"[,x]", value) if v.strip()]
        if not isinstance(value, list | tuple):
            value = [value]
        return tuple(_as(item, v) for v in value)
    if origin is Literal:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in get_args(hint):
            raise ValueError(value)
        return text
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in TRUE + FALSE:
            raise ValueError(value)
        return text in TRUE
    if isinstance(value, bool):  # True is an int to Python, not to a user
        raise TypeError(value)
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value.strip() if isinstance(value, str) else value)
    if hint is float:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    raise TypeError(hint)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in get_args(hint) if h is not type(None))
    if origin is tuple:
        return f"{_describe(get_args(hint)[0])}, separated by commas"
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    return {bool: "true or false", int: "a whole number", float: "a number"}[hint]


# Each field's type and range, read once (the annotations above are strings until resolved).
_HINTS = get_type_hints(ModelSettings)
_RANGES = {f.name: f.metadata for f in fields(ModelSettings)}


def with_settings(config: ModelConfig,
                  settings: ModelSettings | Mapping[str, Any]) -> ModelConfig:
    """`config` changed by model settings (typed, or `{key: text}` as `--set` gives them)."""
    if not isinstance(settings, ModelSettings):
        settings = ModelSettings.from_dict(settings)
    return settings.apply(config)


def resolve_model_config(name: str, settings: ModelSettings | None = None, *,
                         num_classes: int | None = None,
                         input_size: tuple[int, int] | None = None) -> ModelConfig:
    """The one place a model's configuration is resolved: the registered variant `name`,
    changed by `settings`, then sized for the data (its classes and image size)."""
    sized = {"num_classes": num_classes, "input_size": tuple(input_size) if input_size else None}
    return (settings or ModelSettings()).apply(
        get_model_config(name), **{k: v for k, v in sized.items() if v is not None})
