"""The search space: validation, parameter naming per tie mode, params -> plan."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import netsculpt as ns
from netsculpt.errors import InputError, InvalidRatioError, NothingToPruneError
from netsculpt.studies.space import SearchSpace, build_space, plan_hash


def test_space_validates_on_construction() -> None:
    with pytest.raises(InputError, match="tie"):
        SearchSpace(tie="block")  # type: ignore[arg-type]
    with pytest.raises(InvalidRatioError, match="min_keep=0.9, max_keep=0.5"):
        SearchSpace(min_keep=0.9, max_keep=0.5)
    with pytest.raises(InvalidRatioError, match="step"):
        SearchSpace(step=0.0)
    with pytest.raises(InputError, match="round_to"):
        SearchSpace(round_to=(0,))
    with pytest.raises(InputError, match="importance"):
        SearchSpace(importance=())


def test_space_round_trips_through_json() -> None:
    space = SearchSpace(tie="layer", min_keep=0.3, step=0.1, importance=["lamp"], round_to=4)
    assert space.importance == ("lamp",) and space.round_to == (4,)
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space
    assert space.keep_choices() == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    with pytest.raises(InputError, match="no field"):
        SearchSpace.from_dict({"tie": "layer", "colour": 1})


@pytest.mark.parametrize(
    ("tie", "keep_names"),
    [
        ("uniform", ["keep"]),
        ("layer", ["keep:fc1", "keep:fc2"]),
        ("stage", ["keep:fc1", "keep:fc2"]),
    ],
)
def test_parameters_per_tie_mode(tiny, tie, keep_names) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    graph = ns.analyze(model, x)
    bound = build_space(graph, SearchSpace(tie=tie, importance=("magnitude", "lamp")))
    keeps = [n for n in bound.distributions if n.startswith("keep")]
    assert keeps == keep_names
    assert isinstance(bound.distributions[keeps[0]], FloatDistribution)
    assert bound.distributions["importance"] == CategoricalDistribution(["magnitude", "lamp"])
    assert sorted(g for gs in bound.keep_groups.values() for g in gs) == sorted(
        g.name for g in graph.prunable_groups
    )


def test_params_rebuild_the_plan(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    graph = ns.analyze(model, x)
    bound = build_space(graph, SearchSpace(tie="layer", step=0.25, round_to=(1, 8)))
    params = {"keep:fc1": 0.5, "keep:fc2": 0.75, "importance": "magnitude", "round_to": 1}
    plan = bound.to_plan(model, x, params, graph=graph)
    widths = plan.widths
    assert widths["fc1"] == (32, 16)
    assert widths["fc2"] == (24, 18)
    # the same parameters give the same plan, so the plan hash is a cache key
    again = bound.to_plan(model, x, params, graph=graph)
    assert plan_hash(again.to_json()) == plan_hash(plan.to_json())
    # the row fed to the predictor: two keeps, one-hot importance and round_to
    assert bound.encode(params) == [0.5, 0.75, 1.0, 0.0, 1.0, 0.0]
    # keep 1.0 everywhere is the identity plan
    whole = bound.to_plan(model, x, {**params, "keep:fc1": 1.0, "keep:fc2": 1.0}, graph=graph)
    assert whole.widths["fc1"] == (32, 32)


def test_suggest_reads_every_parameter(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    bound = build_space(ns.analyze(model, x), SearchSpace(tie="uniform", step=0.25))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    params = bound.suggest(trial)
    assert set(params) == {"keep", "importance", "round_to"}
    assert params["keep"] in (0.25, 0.5, 0.75, 1.0)


def test_all_groups_excluded_is_nothing_to_prune(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    with pytest.raises(NothingToPruneError, match="exclude"):
        build_space(ns.analyze(model, x), SearchSpace(exclude=("re:.*",)))


def test_encoding_follows_the_rounded_widths(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    bound = build_space(ns.analyze(model, x), SearchSpace(tie="layer", round_to=(1, 8)))
    base = {"keep:fc1": 0.5, "keep:fc2": 0.5, "importance": "magnitude", "round_to": 8}
    # 0.5 and 0.55 of 32 units both round to 16 units: the predictor sees one point
    assert bound.encode(base) == bound.encode({**base, "keep:fc1": 0.55})
    assert (
        bound.encode({**base, "round_to": 1})[:2]
        != bound.encode({**base, "keep:fc1": 0.55, "round_to": 1})[:2]
    )
    # and the encoded fraction is what the plan keeps
    plan = bound.to_plan(model, x, base)
    kept, size = plan.widths["fc1"][1], plan.widths["fc1"][0]
    assert bound.encode(base)[0] == kept / size
