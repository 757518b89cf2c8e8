"""TrainConfig and DistillConfig: frozen, keyword-only values, checked and JSON round-tripped."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

import netsculpt as ns
from netsculpt.errors import InputError, InvalidRatioError, NetsculptError, UnknownNameError
from netsculpt.recovery.config import DistillConfig, TrainConfig

# (config class, fields, error class, message fragment)
BAD: list[tuple[type[TrainConfig], dict[str, Any], type[NetsculptError], str]] = [
    (TrainConfig, {"lr": 0}, InputError, "TrainConfig: lr must be positive, got 0"),
    (TrainConfig, {"lr": -1e-3}, InputError, "try lr=1e-3"),
    (TrainConfig, {"lr": math.inf}, InputError, "lr must be finite"),
    (TrainConfig, {"lr": "3e-4"}, InputError, "lr must be a number, got '3e-4'"),
    (TrainConfig, {"lr": True}, InputError, "lr must be a number, got True"),
    (TrainConfig, {"weight_decay": -0.1}, InputError, "weight_decay"),
    (TrainConfig, {"batch_size": 0}, InputError, "batch_size must be at least 1"),
    (TrainConfig, {"batch_size": 16.0}, InputError, "got 16.0 (float)"),
    (TrainConfig, {"seed": -1}, InputError, "seed=-1 is outside what torch takes"),
    (TrainConfig, {"seed": 2**64}, InputError, "is outside"),
    (TrainConfig, {"seed": None}, InputError, "seed must be an integer"),
    (TrainConfig, {"early_stop_patience": 0}, InputError, "early_stop_patience=3"),
    (TrainConfig, {"eval_every": "10"}, InputError, "eval_every must be an integer"),
    (DistillConfig, {"lr": 0.0}, InputError, "DistillConfig: lr must be positive"),
    (DistillConfig, {"temperature": 0.0}, InputError, "try temperature=2.0"),
    (DistillConfig, {"temperature": math.nan}, InputError, "temperature must be finite"),
    (DistillConfig, {"alpha": 1.01}, InvalidRatioError, "alpha must be in [0, 1]"),
    (DistillConfig, {"alpha": "all"}, InputError, "alpha must be a number"),
    (DistillConfig, {"hidden_weight": -1.0}, InputError, "hidden_weight"),
    (DistillConfig, {"output_kind": "probs"}, UnknownNameError, "'auto', 'logits'"),
    (DistillConfig, {"output_kind": None}, UnknownNameError, "output_kind=None"),
    (DistillConfig, {"hidden_layers": ["fc1"]}, InputError, "hidden_weight=0.0"),
    (DistillConfig, {"hidden_layers": (), "hidden_weight": 1.0}, InputError, "names no layer"),
    (DistillConfig, {"hidden_layers": 3, "hidden_weight": 1.0}, InputError, "must be a list"),
    (DistillConfig, {"hidden_layers": [1], "hidden_weight": 1.0}, InputError, "hidden_layers"),
]


@pytest.mark.parametrize(
    ("cls", "fields", "error", "words"),
    [pytest.param(c, f, e, w, id=f"{c.__name__}-{'-'.join(f)}") for c, f, e, w in BAD],
)
def test_a_bad_value_is_refused_with_the_fix(
    cls: type[TrainConfig], fields: dict[str, Any], error: type[NetsculptError], words: str
) -> None:
    with pytest.raises(error) as info:
        cls(**fields)
    assert words in str(info.value), str(info.value)


def test_configs_are_frozen_and_keyword_only() -> None:
    config = ns.TrainConfig(lr=1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ns.TrainConfig(1e-4)  # type: ignore[misc]
    assert hash(config) == hash(ns.TrainConfig(lr=1e-4))  # a value: equal configs, equal hash
    assert isinstance(ns.DistillConfig(), ns.TrainConfig)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        TrainConfig(lr=1, weight_decay=0.01, batch_size=8, seed=7, early_stop_patience=2),
        DistillConfig(),
        DistillConfig(
            temperature=4,
            alpha=1,
            hidden_weight=0.5,
            hidden_layers=["features.3", "classifier"],
            output_kind="embeddings",
            eval_every=5,
        ),
    ],
    ids=["train-default", "train-set", "distill-default", "distill-set"],
)
def test_json_round_trip(config: TrainConfig) -> None:
    data = config.to_dict()
    assert data["kind"] == config.kind
    assert json.loads(json.dumps(data)) == data  # plain JSON values only
    assert TrainConfig.from_dict(data) == config
    assert type(TrainConfig.from_json(config.to_json())) is type(config)
    assert TrainConfig.from_json(config.to_json()) == config


def test_values_are_normalised() -> None:
    config = DistillConfig(lr=1, alpha=1, hidden_weight=2, hidden_layers="fc1")
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert isinstance(config.alpha, float) and config.hidden_layers == ("fc1",)
    assert config == DistillConfig(lr=1.0, alpha=1.0, hidden_weight=2.0, hidden_layers=["fc1"])


def test_from_dict_takes_the_kind() -> None:
    assert TrainConfig.from_dict({"lr": 0.5}) == TrainConfig(lr=0.5)  # no kind: the class
    assert DistillConfig.from_dict({"alpha": 0.9}) == DistillConfig(alpha=0.9)
    assert type(TrainConfig.from_dict({"kind": "distill"})) is DistillConfig
    with pytest.raises(InputError, match="DistillConfig has no field 'momentum'"):
        TrainConfig.from_dict({"kind": "distill", "momentum": 0.9})
    with pytest.raises(InputError, match="TrainConfig has no field 'alpha'"):
        TrainConfig.from_dict({"kind": "finetune", "alpha": 0.5})
    with pytest.raises(InputError, match="of 70,000 characters"):
        TrainConfig.from_json(" " * 70_000)
