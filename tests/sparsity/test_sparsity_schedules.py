"""The cubic schedule of Zhu & Gupta and RigL's cosine update fraction at known points."""

from __future__ import annotations

import itertools

import pytest

from netsculpt.sparsity import cosine_fraction, cubic_sparsity, update_steps


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),  # before and at t0: s_i
        (10, 0.0),
        (35, 0.9 - 0.9 * 0.75**3),  # a quarter of the way: s_f + (s_i - s_f)(1 - 1/4)^3
        (60, 0.9 - 0.9 * 0.5**3),  # half-way: 0.7875
        (85, 0.9 - 0.9 * 0.25**3),
        (110, 0.9),  # at and after t0 + n*dt: s_f
        (500, 0.9),
    ],
)
def test_cubic_sparsity_known_points(step: int, expected: float) -> None:
    assert cubic_sparsity(step, initial=0.0, final=0.9, start=10, end=110) == pytest.approx(
        expected
    )


def test_cubic_from_a_nonzero_start_and_is_monotone() -> None:
    values = [cubic_sparsity(t, initial=0.5, final=0.95, start=0, end=100) for t in range(101)]
    assert values[0] == 0.5
    assert values[50] == pytest.approx(0.95 + (0.5 - 0.95) * 0.125)
    assert values[-1] == pytest.approx(0.95)
    assert all(b >= a for a, b in itertools.pairwise(values))
    # the cubic rises fastest at the start
    assert values[10] - values[0] > values[100] - values[90]


def test_update_steps_include_the_end() -> None:
    assert update_steps(0, 100, 25) == [0, 25, 50, 75, 100]
    assert update_steps(5, 50, 20) == [5, 25, 45, 50]


def test_cosine_fraction() -> None:
    assert cosine_fraction(0, initial=0.3, end=100) == pytest.approx(0.3)
    assert cosine_fraction(50, initial=0.3, end=100) == pytest.approx(0.15)
    assert cosine_fraction(100, initial=0.3, end=100) == 0.0
    assert cosine_fraction(150, initial=0.3, end=100) == 0.0
