"""Pareto dominance and hypervolume on objective vectors (minimisation after sign flips)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume", "normalise", "pareto_mask", "to_losses"]


def to_losses(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Flip the sign of maximised objectives so that every column is minimised."""
    values = np.asarray(values, dtype=float).reshape(-1, len(maximize))
    signs = np.array([-1.0 if m else 1.0 for m in maximize])
    return values * signs


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows; of identical rows only the first is kept."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        others = losses
        dominated_by = np.all(others <= losses[i], axis=1) & np.any(others < losses[i], axis=1)
        if dominated_by.any():
            keep[i] = False
            continue
        # identical later rows are dropped (the earliest trial represents the point)
        same = np.all(others == losses[i], axis=1)
        same[: i + 1] = False
        keep[same] = False
    return keep


def normalise(losses: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Scale each column to [0, 1] using the bounds ``lo``/``hi`` (constant columns -> 0)."""
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (np.asarray(losses, dtype=float) - lo) / span


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``losses`` and bounded by ``reference`` (all minimised).

    Rows that do not dominate the reference point contribute nothing.
    """
    from optuna._hypervolume import compute_hypervolume

    losses = np.asarray(losses, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if losses.size == 0:
        return 0.0
    inside = np.all(losses < reference, axis=1)
    pts = losses[inside]
    if len(pts) == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    return float(compute_hypervolume(pts, reference, assume_pareto=True))
