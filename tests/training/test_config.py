"""Typed configuration: model settings parsed against their types, recipes carried whole."""

import json
from dataclasses import fields
from typing import get_args

import pytest

from lenet.cli import main
from lenet.errors import ConfigError
from lenet.models.config import MODELS, Activation, Pool
from lenet.models.network import ACTIVATION_LAYERS, POOL_LAYERS
from lenet.models.settings import ModelSettings, parse_settings, resolve_model_config, setting_names
from lenet.training.config import FROM_RECIPE, RECIPES, TrainConfig


def test_settings_are_typed_from_text_and_from_typed_values():
    from_text = parse_settings(["channels=16,32", "kernel=3", "padding=same", "bn=yes",
                                "dropout=0.25", "activation=ReLU"])
    from_toml = ModelSettings.from_dict({"channels": [16, 32], "kernel_sizes": 3,
                                         "paddings": ["same"], "batch_norm": True,
                                         "dropout": 0.25, "activation": "relu"})
    assert from_text == from_toml == ModelSettings(
        channels=(16, 32), kernel_sizes=(3,), paddings=("same",), batch_norm=True, dropout=0.25,
        activation="relu")
    assert from_text.to_args() == ["activation=relu", "channels=16,32", "kernel=3",
                                   "padding=same", "batch_norm=true", "dropout=0.25"]
    assert parse_settings(from_text.to_args()) == from_text  # the --set spelling round-trips


@pytest.mark.parametrize("data, message", [
    ({"pool_size": True}, "--set pool_size=true: expected a whole number"),
    ({"pool_size": 2.5}, "--set pool_size=2.5: expected a whole number"),
    ({"dense": [120, "wide"]}, "expected a whole number, separated by commas"),
    ({"paddings": [1, "valid"]}, "expected a whole number or one of same, separated by commas"),
    ({"paddings": "-1"}, "--set padding=-1: must be at least 0"),
    ({"dropout": "nan"}, "--set dropout=nan: expected a number"),
    ({"pool": "min"}, "--set pool=min: expected one of avg, max"),
    ({"width": 3}, "--set width: unknown setting; choose from activation, pool, pool_size, "
                   "channels, kernel, padding, dense, batch_norm, dropout, init, classes"),
])
def test_wrong_types_ranges_and_keys_are_refused(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ModelSettings.from_dict(data)


def test_per_layer_values_need_one_or_one_per_convolution():
    lenet5 = MODELS["lenet5"]
    # The verified bug: a third padding for two convolutions was silently dropped.
    with pytest.raises(ConfigError, match="--set padding=2,0,1: 3 values for 2 convolution"):
        parse_settings(["padding=2,0,1"]).apply(lenet5)
    deeper = parse_settings(["channels=6,16,32", "padding=2,0,1"]).apply(lenet5)
    assert deeper.paddings == (2, 0, 1) and deeper.kernel_sizes == (5, 5, 5)
    assert parse_settings(["padding=1"]).apply(lenet5).paddings == (1, 1)


def test_the_model_is_resolved_in_one_place():
    settings = parse_settings(["activation=relu", "channels=8,16"])
    config = TrainConfig(model="lenet5", model_settings=settings, resize=(32, 32))
    resolved = config.model_config(num_classes=5, image_size=(28, 28))
    assert resolved == resolve_model_config("lenet5", settings, num_classes=5,
                                            input_size=(32, 32))
    assert (resolved.activation, resolved.channels, resolved.num_classes,
            resolved.input_size) == ("relu", (8, 16), 5, (32, 32))
    assert resolve_model_config("lenet-100k") == MODELS["lenet-100k"]


def test_choices_in_the_types_match_the_layers_built():
    assert set(ACTIVATION_LAYERS) == set(get_args(Activation))
    assert set(POOL_LAYERS) == set(get_args(Pool))


def test_a_recipe_named_in_the_constructor_carries_its_values():
    # The verified bug: TrainConfig(recipe="fast") recorded "fast" with the book's values.
    fast = TrainConfig(recipe="fast")
    assert fast == TrainConfig.from_recipe("fast")
    assert (fast.model, fast.batch_size, fast.lr, fast.epochs, fast.schedule) == (
        "lenet5-modern", 192, 0.3, 2, "one-cycle")
    assert fast.model_settings == ModelSettings(batch_norm=True)
    changed = TrainConfig(recipe="fast", epochs=10, model_settings={"dropout": "0.1"})
    assert changed.epochs == 10 and changed.batch_size == 192
    assert changed.model_settings == ModelSettings(batch_norm=True, dropout=0.1)
    assert TrainConfig() == TrainConfig(recipe="book")
    assert TrainConfig().replace(epochs=3).lr == 0.1


def test_recipes_only_set_options_that_recipes_may_set():
    from_recipe = {f.name for f in fields(TrainConfig) if f.default is FROM_RECIPE}
    for name, values in RECIPES.items():
        assert set(values) <= from_recipe, name
        assert TrainConfig(recipe=name).model_config().num_classes == 10


def test_records_keep_typed_settings_and_older_string_ones_still_load():
    config = TrainConfig(model_settings=parse_settings(["channels=16,32", "bn=true"]))
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["model_settings"] == {"channels": [16, 32], "batch_norm": True}
    assert TrainConfig.from_dict(stored) == config
    older = {**stored, "model_settings": {"channels": "16,32", "bn": "true"}}
    assert TrainConfig.from_dict(older) == config


@pytest.mark.parametrize("command", ["summary", "train"])
@pytest.mark.parametrize("setting, message", [
    ("dropout=high", "--set dropout=high: expected a number"),
    ("padding=2,0,1", "--set padding=2,0,1: 3 values for 2 convolution layers"),
    ("colour=red", "--set colour: unknown setting; choose from " + ", ".join(setting_names())),
])
def test_cli_refuses_bad_settings_with_one_line(capsys, isolated_sources, command, setting,
                                                message):
    assert main([command, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lenet: error: {message}") and err.count("\n") == 1
