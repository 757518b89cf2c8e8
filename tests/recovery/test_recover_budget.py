from __future__ import annotations

import time

import pytest
from recover_helpers import blobs_mlp, same_state, state

import netsculpt as ns
from netsculpt.recovery import Budget


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (200, Budget(steps=200)),
        ("200", Budget(steps=200)),
        ("200 steps", Budget(steps=200)),
        ("1 step", Budget(steps=1)),
        ("30s", Budget(seconds=30)),
        ("2m", Budget(seconds=120)),
        ("1.5h", Budget(seconds=5400)),
        ("0.5 min", Budget(seconds=30)),
        (Budget(steps=3, seconds=1.0), Budget(steps=3, seconds=1.0)),
    ],
)
def test_parse(value: object, expected: Budget) -> None:
    assert Budget.parse(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [0, -5, "0", "0s", "-3s", "abc", "3 parsecs", "1.5 steps", 1.5, True, None]
)
def test_bad_budget_is_an_input_error(value: object) -> None:
    with pytest.raises(ns.InputError, match="budget|Budget"):
        Budget.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"steps": 0}, {"steps": -1}, {"seconds": 0.0}, {"seconds": float("inf")}, {"steps": 2.0}],
)
def test_budget_validates_on_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ns.InputError, match="Budget"):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_budget_is_frozen() -> None:
    budget = Budget(steps=3)
    with pytest.raises(AttributeError):
        budget.steps = 4  # type: ignore[misc]


@pytest.mark.parametrize("budget", [0, -1, "0s"])
def test_finetune_rejects_empty_budget_and_leaves_model(blobs, budget: object) -> None:
    model = blobs_mlp()
    before = state(model)
    with pytest.raises(ns.InputError, match="budget|Budget"):
        ns.finetune(model, blobs, budget, progress=False)  # type: ignore[arg-type]
    assert same_state(before, state(model))


class StepCounter:
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, step: int, model: object) -> None:
        self.steps = step + 1


def test_time_budget_stops_on_time(blobs) -> None:
    counter = StepCounter()
    start = time.perf_counter()
    ns.finetune(blobs_mlp(), blobs, "0.3s", progress=False, callbacks=[counter])
    elapsed = time.perf_counter() - start
    assert counter.steps > 0
    assert 0.3 <= elapsed < 5.0


def test_steps_and_seconds_stop_at_whichever_comes_first(blobs) -> None:
    counter = StepCounter()
    ns.finetune(
        blobs_mlp(), blobs, Budget(steps=7, seconds=60), progress=False, callbacks=[counter]
    )
    assert counter.steps == 7
