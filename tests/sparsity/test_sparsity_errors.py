"""Bad input gives NetsculptErrors whose messages name the value and the fix."""

from __future__ import annotations

import math

import pytest
from sparsity_helpers import mlp

import netsculpt as ns
from netsculpt.errors import (
    InputError,
    InvalidRatioError,
    NetsculptError,
    SparsityError,
)
from netsculpt.sparsity import (
    GradualConfig,
    GraNetConfig,
    LotteryTicketConfig,
    MagnitudeConfig,
    NMConfig,
    RandomConfig,
    RigLConfig,
    config_from_dict,
)


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, math.nan, "0.5", True])
@pytest.mark.parametrize(
    "cls", [MagnitudeConfig, GradualConfig, LotteryTicketConfig, RandomConfig, RigLConfig]
)
def test_sparsity_outside_zero_one(cls: type, value: object) -> None:
    with pytest.raises(InvalidRatioError) as info:
        cls(sparsity=value)
    message = str(info.value)
    assert f"sparsity={value!r}" in message
    assert "[0, 1)" in message and "pass e.g." in message
    assert isinstance(info.value, NetsculptError)


@pytest.mark.parametrize(("n", "m"), [(5, 4), (0, 4), (-1, 4), (2, 0)])
def test_bad_n_m(n: int, m: int) -> None:
    with pytest.raises(SparsityError) as info:
        NMConfig(n=n, m=m)
    assert f"m={m}" in str(info.value)
    assert "pass e.g." in str(info.value)


@pytest.mark.parametrize("cls", [GradualConfig, GraNetConfig])
def test_schedule_that_ends_before_it_starts(cls: type) -> None:
    with pytest.raises(SparsityError, match="ends before it starts") as info:
        cls(start_step=100, end_step=50)
    assert "start_step=100, end_step=50" in str(info.value)


def test_schedule_that_does_not_fit_the_budget(task) -> None:
    with pytest.raises(SparsityError, match="does not fit budget=100") as info:
        ns.sparsify(mlp(), GradualConfig(end_step=200), task=task, budget=100)
    assert "end_step < 100" in str(info.value)


def test_initial_above_final_sparsity() -> None:
    with pytest.raises(SparsityError, match="initial_sparsity <= sparsity"):
        GradualConfig(sparsity=0.5, initial_sparsity=0.8)


@pytest.mark.parametrize("budget", [0, -5])
def test_zero_budget(budget: int, task) -> None:
    with pytest.raises(InputError) as info:
        ns.sparsify(mlp(), GradualConfig(), task=task, budget=budget)
    assert f"budget={budget}" in str(info.value)
    assert "positive number" in str(info.value)


def test_fractional_budget(task) -> None:
    with pytest.raises(InputError, match="whole number of optimiser steps"):
        ns.sparsify(mlp(), MagnitudeConfig(), task=task, budget=2.5)


@pytest.mark.parametrize(
    "config", [GradualConfig(), RigLConfig(), LotteryTicketConfig(), NMConfig(method="sr-ste")]
)
def test_training_methods_need_a_task_and_budget(config) -> None:
    with pytest.raises(InputError, match="needs task=") as info:
        ns.sparsify(mlp(), config)
    assert type(config).__name__ in str(info.value)


def test_budget_without_task() -> None:
    with pytest.raises(InputError, match="without a task"):
        ns.sparsify(mlp(), MagnitudeConfig(), budget=10)


def test_rewind_after_the_end_of_training(task) -> None:
    with pytest.raises(SparsityError, match="rewind_step=50"):
        ns.sparsify(mlp(), LotteryTicketConfig(rewind_step=50), task=task, budget=50)


def test_not_a_config() -> None:
    with pytest.raises(InputError, match="MagnitudeConfig"):
        ns.sparsify(mlp(), {"sparsity": 0.5})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda: RigLConfig(drop_fraction=0.0), InvalidRatioError, "drop_fraction=0.0"),
        (lambda: RigLConfig(end_fraction=1.5), InvalidRatioError, "end_fraction=1.5"),
        (lambda: RigLConfig(update_every=0), SparsityError, "update_every=0"),
        (lambda: GradualConfig(frequency=0), SparsityError, "frequency=0"),
        (lambda: LotteryTicketConfig(rounds=0), SparsityError, "rounds=0"),
        (lambda: MagnitudeConfig(scope="local"), InputError, "scope='local'"),
        (lambda: RandomConfig(distribution="er"), InputError, "'erk'"),
        (lambda: NMConfig(method="ste"), InputError, "'sr-ste'"),
        (lambda: MagnitudeConfig(include=[3]), SparsityError, "re:"),
        (lambda: config_from_dict({"kind": "obd"}), InputError, "kind='obd'"),
    ],
)
def test_other_bad_fields(make, error: type, text: str) -> None:
    with pytest.raises(error) as info:
        make()
    assert text in str(info.value)


def test_configs_round_trip_through_dicts() -> None:
    import json

    for config in [
        MagnitudeConfig(sparsity=0.7, exclude=("re:.*head",)),
        GradualConfig(),
        GraNetConfig(initial_sparsity=0.5),
        LotteryTicketConfig(control=True),
        RandomConfig(),
        NMConfig(n=1, m=8, method="sr-ste"),
        RigLConfig(),
    ]:
        assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
