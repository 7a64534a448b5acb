import pytest
import torch

from lenet.errors import ConfigError
from lenet.models.config import MODELS, ModelConfig, get_model_config
from lenet.models.network import LeNet, build_model
from lenet.models.summary import format_summary, summarize

EXPECTED_PARAMETERS = {"lenet5": 61_706, "lenet5-modern": 61_706, "lenet-100k": 98_922}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_trains(name):
    model = build_model(get_model_config(name), seed=0)
    x = torch.rand(8, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (8, 10)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_counts(name):
    assert build_model(get_model_config(name)).num_parameters == EXPECTED_PARAMETERS[name]


def test_every_model_has_an_expected_count():
    assert set(EXPECTED_PARAMETERS) == set(MODELS)


def test_lenet5_is_the_books_model():
    model = build_model(MODELS["lenet5"])
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv2d", "Sigmoid", "AvgPool2d", "Conv2d", "Sigmoid", "AvgPool2d",
                     "Flatten", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]


def test_xavier_init_is_seeded_and_uniform():
    a, b = build_model(MODELS["lenet5"], seed=1), build_model(MODELS["lenet5"], seed=1)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    bound = (6 / (400 + 120)) ** 0.5  # Xavier-uniform bound for fc1
    assert a.fc1.weight.abs().max() <= bound
    assert a.fc1.weight.abs().max() > 0.9 * bound
    c = build_model(MODELS["lenet5"], seed=2)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_build_model_with_seed_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_model(MODELS["lenet5"], seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_batch_norm_and_dropout_variants():
    config = ModelConfig(activation="relu", pool="max", batch_norm=True, dropout=0.3,
                         channels=(8, 16, 32), kernel_sizes=(3, 3, 3), paddings=(1, 1, 1))
    model = build_model(config, seed=0)
    assert {"bn1", "bn3", "fc1_bn", "fc1_drop"} <= {n for n, _ in model.named_children()}
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)
    assert config.feature_shape() == (32, 3, 3)


def test_config_round_trips_through_dicts():
    config = ModelConfig(channels=(4, 8), dense=(32,), dropout=0.1)
    as_json_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
    assert ModelConfig.from_dict(as_json_lists) == config


@pytest.mark.parametrize("changes, message", [
    ({"kernel_sizes": (5, 15)}, r"conv2: 15x15 kernel is larger than its padded input 14x14"),
    ({"channels": (6, 16, 32), "kernel_sizes": (5, 5, 5), "paddings": (2, 0, 0)},
     r"pool3: 2x2 pooling of a 1x1 map leaves nothing"),
    ({"channels": (6, 16, 32), "kernel_sizes": (5, 5, 7), "paddings": (2, 0, 0)},
     r"conv3: 7x7 kernel is larger than its padded input 5x5"),
    ({"input_size": (8, 8), "kernel_sizes": (9, 5), "paddings": (0, 0)}, r"conv1: 9x9 kernel"),
    ({"kernel_sizes": (5,)}, "kernel_sizes has 1 entries but channels has 2"),
    ({"activation": "swish"}, "unknown activation 'swish'"),
    ({"pool": "median"}, "unknown pool"),
    ({"dense": (120, 0)}, "dense must be positive"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"channels": ()}, "at least one convolution"),
])
def test_invalid_configs_are_caught_before_building(changes, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**changes)


def test_unknown_model_name_lists_choices():
    with pytest.raises(ConfigError, match="lenet5-modern"):
        get_model_config("alexnet")


def test_summary_rows_match_the_book():
    rows = summarize(LeNet(MODELS["lenet5"]))
    shapes = [(r.kind, r.output_shape) for r in rows]
    assert shapes == [
        ("Conv2d", (1, 6, 28, 28)), ("Sigmoid", (1, 6, 28, 28)), ("AvgPool2d", (1, 6, 14, 14)),
        ("Conv2d", (1, 16, 10, 10)), ("Sigmoid", (1, 16, 10, 10)), ("AvgPool2d", (1, 16, 5, 5)),
        ("Flatten", (1, 400)), ("Linear", (1, 120)), ("Sigmoid", (1, 120)),
        ("Linear", (1, 84)), ("Sigmoid", (1, 84)), ("Linear", (1, 10)),
    ]
    assert sum(r.params for r in rows) == 61_706
    assert sum(r.macs for r in rows) == 416_520
    assert rows[0].macs == 6 * 28 * 28 * 25
    text = format_summary(rows)
    assert text.splitlines()[-1].split() == ["total", "61,706", "416,520"]


def test_summary_keeps_training_mode():
    model = build_model(ModelConfig(batch_norm=True))
    model.train()
    summarize(model)
    assert model.training
