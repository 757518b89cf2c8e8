"""PruneConfig: validation, JSON round trip, the ratio/importance shortcuts, the config
recorded in a plan, and criteria that declare what they need."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    InputError,
    InvalidRatioError,
    NetsculptError,
    PlanError,
    UnknownNameError,
)
from netsculpt.graph.analysis import Group
from netsculpt.pruning.importance import (
    IMPORTANCE,
    CriterionInfo,
    ImportanceContext,
    criterion_info,
)


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    return model.eval(), torch.randn(8, 16)


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names registered by a test, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        IMPORTANCE.pop(name, None)


# ------------------------------------------------------------------------ validation

BAD = [
    ({"ratio": 1.0}, InvalidRatioError, "[0, 1)"),
    ({"ratio": -0.1}, InvalidRatioError, "got -0.1"),
    ({"ratio": float("nan")}, InvalidRatioError, "got nan"),
    ({"ratio": True}, InvalidRatioError, "got True"),
    ({"ratio": "0.3"}, InvalidRatioError, "'0.3'"),
    ({"ratio": {}}, InputError, "an empty mapping prunes nothing"),
    ({"ratio": {"layer1": 1.5}}, InvalidRatioError, "ratio['layer1']"),
    ({"ratio": {3: 0.5}}, InputError, "got 3 (int)"),
    ({"ratio": {"re:(": 0.5}}, InputError, "'re:(' is not a valid regular expression"),
    ({"importance": "psychic"}, UnknownNameError, "ns.register_importance('psychic')"),
    ({"importance": 5}, InputError, "importance is a criterion name (str)"),
    ({"importance": ""}, InputError, "importance is a criterion name (str)"),
    ({"importance": np.linalg.norm}, InputError, "register it with ns.register_importance"),
    ({"exclude": 5}, InputError, "PruneConfig(exclude=5)"),
    ({"exclude": ("fc", 3)}, InputError, "got 3 (int)"),
    ({"exclude": ("fc", "fc")}, InputError, "names 'fc' twice"),
    ({"exclude": {"fc": 1}}, InputError, "got dict"),
    ({"exclude": ("re:[",)}, InputError, "'re:[' is not a valid regular expression"),
    ({"remove_blocks": [3]}, InputError, "got 3 (int)"),
    ({"round_to": 0}, InputError, "round_to must be at least 1, got 0"),
    ({"round_to": 8.0}, InputError, "round_to must be an integer, got 8.0"),
    ({"round_to": True}, InputError, "round_to must be an integer, got True"),
    ({"seed": -1}, InputError, "seed must be at least 0, got -1"),
    ({"seed": "x"}, InputError, "seed must be an integer, got 'x'"),
    ({"global_ranking": 1}, InputError, "global_ranking must be True or False"),
    ({"protect_outputs": "yes"}, InputError, "protect_outputs must be True or False"),
    ({"verify": None}, InputError, "verify must be True or False, got None"),
]


@pytest.mark.parametrize(
    ("fields", "error", "fragment"),
    BAD,
    ids=[f"{next(iter(f))}-{i}" for i, (f, _, _) in enumerate(BAD)],
)
def test_a_bad_field_is_refused_when_the_config_is_made(
    fields: dict[str, Any], error: type[NetsculptError], fragment: str
) -> None:
    with pytest.raises(error, match=None) as info:
        ns.PruneConfig(**fields)
    assert fragment in str(info.value)
    # the message names the config and the field, so the fix is where the value was written
    field = next(iter(fields))
    assert f"{field}" in str(info.value)


def test_configs_are_frozen_and_keyword_only() -> None:
    config = ns.PruneConfig()
    with pytest.raises(AttributeError):
        config.ratio = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        ns.PruneConfig(0.5)  # type: ignore[misc]


def test_sequences_become_tuples_and_numbers_floats() -> None:
    config = ns.PruneConfig(ratio=np.float64(0.25), exclude=["4"], remove_blocks="a.b")
    assert config.ratio == 0.25 and type(config.ratio) is float
    assert config.exclude == ("4",)
    assert config.remove_blocks == ("a.b",)


def test_equal_options_give_equal_configs() -> None:
    a = ns.PruneConfig(ratio={"0": 0.5, "*": 0.2}, exclude=["4"])
    b = ns.PruneConfig(ratio={"*": 0.2, "0": 0.5}, exclude=("4",))
    assert a == b and hash(a) == hash(b)
    assert list(a.ratio) == ["*", "0"]  # sorted, whatever order it was written in
    assert repr(a) == repr(b)
    assert ns.PruneConfig(ratio=0.5) != ns.PruneConfig(ratio=0.25)
    assert len({a, b, ns.PruneConfig()}) == 2


def test_the_ratio_mapping_is_read_only() -> None:
    config = ns.PruneConfig(ratio={"0": 0.5})
    with pytest.raises(TypeError):
        config.ratio["0"] = 0.9  # type: ignore[index]


@pytest.mark.parametrize(
    "config",
    [
        ns.PruneConfig(),
        ns.PruneConfig(
            ratio={"re:.*attn.*": 0.5, "*": 0.25},
            importance="lamp",
            exclude=("lm_head", "re:.*gate"),
            round_to=16,
            global_ranking=False,
            protect_outputs=False,
            remove_blocks=("layers.1.mlp",),
            seed=7,
            verify=False,
        ),
    ],
)
def test_json_round_trip(config: ns.PruneConfig) -> None:
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    assert ns.PruneConfig.from_dict(json.loads(json.dumps(data))) == config
    assert ns.PruneConfig.from_json(config.to_json()) == config


def test_from_dict_fills_defaults_and_refuses_unknown_fields() -> None:
    assert ns.PruneConfig.from_dict({"ratio": 0.5}) == ns.PruneConfig(ratio=0.5)
    with pytest.raises(InputError, match="no field 'round'; did you mean 'round_to'"):
        ns.PruneConfig.from_dict({"round": 8})
    with pytest.raises(InputError, match="a PruneConfig dict is needed, got list"):
        ns.PruneConfig.from_dict([("ratio", 0.5)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not JSON"):
        ns.PruneConfig.from_json("{ratio: 0.5")


# ------------------------------------------------------------------------ shortcuts


def test_ratio_and_importance_shortcuts_replace_the_config_fields() -> None:
    model, x = mlp()
    config = ns.PruneConfig(ratio=0.5, importance="l1", round_to=8)
    plan = ns.plan(model, x, config, ratio=0.25, importance="magnitude")
    used = plan.config
    assert used == ns.PruneConfig(ratio=0.25, importance="magnitude", round_to=8)
    assert plan.widths == {"0": (64, 48), "2": (32, 24)}
    # without shortcuts the config's own values are used
    assert ns.plan(model, x, config).config == config
    # and the everyday call needs no config at all
    assert ns.plan(model, x, ratio=0.25).config == ns.PruneConfig(ratio=0.25)


def test_prune_takes_the_same_config_and_shortcuts() -> None:
    model, x = mlp()
    small = ns.prune(model, x, ns.PruneConfig(ratio=0.5, round_to=16), ratio=0.25)
    assert small[0].out_features == 48
    assert ns.plan_of(small).config == ns.PruneConfig(ratio=0.25, round_to=16)


def test_a_shortcut_is_validated_like_the_field() -> None:
    model, x = mlp()
    with pytest.raises(InvalidRatioError, match="got 1.5"):
        ns.plan(model, x, ns.PruneConfig(), ratio=1.5)
    with pytest.raises(UnknownNameError, match="'psychic'"):
        ns.prune(model, x, importance="psychic")


# ------------------------------------------------------------------------ recorded in plans


def test_the_config_is_recorded_in_the_plan_and_read_back() -> None:
    model, x = mlp()
    config = ns.PruneConfig(ratio={"0": 0.5}, exclude=("4",), round_to=8, seed=3)
    plan = ns.plan(model, x, config)
    assert plan.meta["config"] == config.to_dict()
    again = ns.Plan.from_json(plan.to_json())
    assert again == plan
    assert again.config == config
    assert ns.apply(model, again)[0].out_features == 32


def test_plans_not_made_by_plan_have_no_config() -> None:
    model, x = mlp()
    small = ns.factorize(ns.prune(model, x, ratio=0.25), rank_ratio=0.25, modules=["0"])
    assert ns.plan_of(small).config is None  # composed: each step records its own
    steps = ns.plan_of(small).meta["steps"]
    assert steps[0]["config"] == ns.PruneConfig(ratio=0.25).to_dict()


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"ratio": 2.0}, "[0, 1)"),
        ({"ratoi": 0.3}, "no field 'ratoi'"),
        ({"exclude": [1]}, "got 1 (int)"),
        ("magnitude", "a PruneConfig dict is needed"),
        ({"importance": ["pkg.mod:fn"]}, "importance is a criterion name"),
    ],
)
def test_a_damaged_stored_config_is_a_plan_error(config: Any, fragment: str) -> None:
    model, x = mlp()
    data = ns.plan(model, x, ratio=0.25).to_dict()
    data["meta"]["config"] = config
    with pytest.raises(PlanError, match="plan field meta.config") as info:
        ns.Plan.from_json(json.dumps(data))
    assert fragment in str(info.value)


def test_a_stored_config_may_name_a_criterion_this_process_lacks(
    registered: list[str],
) -> None:
    model, x = mlp()

    @ns.register_importance("test_stored_elsewhere")
    def elsewhere(group: Group, ctx: ImportanceContext) -> np.ndarray:
        return np.arange(group.size, dtype=float)

    registered.append("test_stored_elsewhere")
    text = ns.plan(model, x, ratio=0.25, importance="test_stored_elsewhere").to_json()
    IMPORTANCE.pop("test_stored_elsewhere")
    # applying a plan scores nothing: it loads, and its config names the criterion as data
    again = ns.Plan.from_json(text)
    assert again.config is not None and again.config.importance == "test_stored_elsewhere"
    assert ns.apply(model, again)[0].out_features == 48
    with pytest.raises(UnknownNameError, match="register yours first"):
        ns.PruneConfig.from_dict(again.meta["config"])


# ------------------------------------------------------------------------ criteria's needs


def test_built_in_criteria_declare_their_needs() -> None:
    assert criterion_info("taylor") == CriterionInfo(needs_calib=True, ranks_globally=False)
    assert criterion_info("activation").needs_calib
    assert criterion_info("lamp") == CriterionInfo(needs_calib=False, ranks_globally=True)
    for name in ("magnitude", "l1", "random"):
        assert criterion_info(name) == CriterionInfo()
    with pytest.raises(UnknownNameError, match="'psychic'"):
        criterion_info("psychic")


def test_register_importance_checks_its_declaration() -> None:
    with pytest.raises(InputError, match="needs_calib must be True or False"):
        ns.register_importance("test_bad_flag", needs_calib="yes")  # type: ignore[arg-type]
    assert "test_bad_flag" not in IMPORTANCE


def test_a_user_criterion_that_needs_calib_is_refused_without_and_used_with_it(
    registered: list[str],
) -> None:
    model, x = mlp()
    seen: list[int] = []

    @ns.register_importance("test_mean_input", needs_calib=True)
    def mean_input(group: Group, ctx: ImportanceContext) -> np.ndarray:
        assert ctx.calib is not None  # the declaration guarantees it
        seen.append(len(ctx.calib))
        return np.arange(group.size, dtype=float)

    registered.append("test_mean_input")
    assert criterion_info("test_mean_input").needs_calib
    with pytest.raises(InputError) as info:
        ns.plan(model, x, ratio=0.25, importance="test_mean_input")
    message = str(info.value)
    assert "'test_mean_input' needs calibration batches" in message
    assert "calib=[batch, ...]" in message
    with pytest.raises(InputError, match="'test_mean_input' needs calibration"):
        ns.prune(model, x, ns.PruneConfig(importance="test_mean_input"), inplace=True)
    assert model[0].out_features == 64  # refused before the model was touched
    plan = ns.plan(model, x, ratio=0.25, importance="test_mean_input", calib=[x, x])
    assert seen and set(seen) == {2}
    # the highest scores (the last units) are kept
    assert dict((g.name, g.kept) for g in plan.groups)["0"] == tuple(range(16, 64))


def test_ranks_globally_is_honoured_for_a_user_criterion(registered: list[str]) -> None:
    model, x = mlp()

    def layer_scale(group: Group, ctx: ImportanceContext) -> np.ndarray:
        # group "0" ramps from low to high, group "2" is flat: ranked together (each group's
        # scores normalised to mean 1), the low end of the ramp goes first
        if group.name == "0":
            return np.arange(1, group.size + 1, dtype=float)
        return np.ones(group.size)

    ns.register_importance("test_global_scale", ranks_globally=True)(layer_scale)
    ns.register_importance("test_local_scale")(layer_scale)
    registered.extend(["test_global_scale", "test_local_scale"])

    globally = ns.plan(model, x, ratio=0.25, importance="test_global_scale")
    locally = ns.plan(model, x, ratio=0.25, importance="test_local_scale")
    assert globally.meta["global_ranking"] is True
    assert locally.meta["global_ranking"] is False
    assert locally.widths == {"0": (64, 48), "2": (32, 24)}
    # the overall ratio (16 + 8 units) is kept, taken where the scores are lowest
    assert globally.widths == {"0": (64, 40), "2": (32, 32)}
    # the config can still say otherwise
    forced = ns.plan(
        model, x, ns.PruneConfig(ratio=0.25, importance="test_global_scale", global_ranking=False)
    )
    assert forced.widths == locally.widths
    assert forced.config is not None and forced.config.global_ranking is False
