"""Sparsity and update-fraction schedules.

>>> cubic_sparsity(0, initial=0.0, final=0.9, start=0, end=100)
0.0
>>> round(cubic_sparsity(50, initial=0.0, final=0.9, start=0, end=100), 4)
0.7875
>>> cubic_sparsity(100, initial=0.0, final=0.9, start=0, end=100)
0.9
>>> round(cosine_fraction(50, initial=0.3, end=100), 4)
0.15
"""

from __future__ import annotations

import math

__all__ = ["cosine_fraction", "cubic_sparsity", "update_steps"]


def cubic_sparsity(step: int, *, initial: float, final: float, start: int, end: int) -> float:
    """The cubic schedule of Zhu & Gupta, "To prune, or not to prune" (2017).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for ``t0 <= t <= t0 + n*dt``,
    with ``t0 = start`` and ``t0 + n*dt = end``; ``s_i`` before the start and ``s_f`` after the
    end. Sparsity rises quickly at first, while the network has redundant weights, then slowly.
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    progress = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** 3


def update_steps(start: int, end: int, frequency: int) -> list[int]:
    """Steps at which a gradual schedule updates its masks: every ``frequency`` steps from
    ``start``, and always at ``end`` so the final sparsity is reached exactly."""
    steps = list(range(start, end + 1, frequency))
    if steps[-1] != end:
        steps.append(end)
    return steps


def cosine_fraction(step: int, *, initial: float, end: int) -> float:
    """RigL's update fraction: ``f(t) = initial / 2 * (1 + cos(pi * t / end))``, zero after
    ``end``."""
    if step >= end:
        return 0.0
    return initial / 2.0 * (1.0 + math.cos(math.pi * step / end))
