"""Optuna samplers by name: ``"nsga2"`` (default), ``"tpe"`` and ``"random"``, seeded.

Constraints (``max_latency_ms=...``) reach NSGA-II and TPE through Optuna's constraint
support (``Trial.set_constraint`` in Optuna 5, ``constraints_func`` before); every trial
also stores its constraint values (``<= 0`` is feasible) as the user attr ``"constraints"``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from netsculpt.errors import InputError, UnknownNameError

__all__ = ["CONSTRAINT_KEYS", "SAMPLERS", "check_constraints", "constraint_values", "make_sampler"]

SAMPLERS = ("nsga2", "tpe", "random")

#: constraint name -> (measured quantity, +1 for an upper bound / -1 for a lower bound)
CONSTRAINT_KEYS: dict[str, tuple[str, float]] = {
    "max_latency_ms": ("latency_ms", 1.0),
    "max_latency_p90_ms": ("latency_p90_ms", 1.0),
    "max_params": ("params", 1.0),
    "max_macs": ("macs", 1.0),
    "min_score": ("score", -1.0),
}


def check_constraints(constraints: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a constraints mapping such as ``{"max_latency_ms": 5.0}``."""
    if not constraints:
        return {}
    out: dict[str, float] = {}
    for key, bound in constraints.items():
        if key not in CONSTRAINT_KEYS:
            raise UnknownNameError(
                f"unknown constraint {key!r}; use any of {', '.join(CONSTRAINT_KEYS)}, e.g. "
                f"constraints={{'max_latency_ms': 5.0}}"
            )
        try:
            out[key] = float(bound)
        except (TypeError, ValueError):
            raise InputError(f"constraint {key!r} needs a number, got {bound!r}") from None
    return out


def constraint_values(
    constraints: Mapping[str, float], metrics: Mapping[str, float]
) -> list[float]:
    """Optuna-style constraint values for measured ``metrics`` (``<= 0`` means satisfied)."""
    values = []
    for key, bound in constraints.items():
        metric, sign = CONSTRAINT_KEYS[key]
        values.append(sign * (float(metrics[metric]) - bound))
    return values


def _constraints_from_trial(n: int, trial: FrozenTrial) -> Sequence[float]:
    values = trial.user_attrs.get("constraints")
    if values is None or len(values) != n:
        return [0.0] * n
    return [float(v) for v in values]


def make_sampler(
    name: str | BaseSampler,
    *,
    seed: int | None,
    n_constraints: int = 0,
    population_size: int | None = None,
) -> BaseSampler:
    """Build the Optuna sampler ``name`` with ``seed`` (a sampler instance is returned as is)."""
    if isinstance(name, BaseSampler):
        return name
    constraints_func: Any = None
    if n_constraints and not hasattr(optuna.trial.Trial, "set_constraint"):
        # Optuna 4 reads constraints through constraints_func; Optuna 5 from the trial
        constraints_func = functools.partial(_constraints_from_trial, n_constraints)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=population_size or 50, constraints_func=constraints_func
        )
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constraints_func=constraints_func
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UnknownNameError(
        f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)} or pass an "
        f"optuna.samplers.BaseSampler instance"
    )


def population_size_for(n_trials: int) -> int:
    """NSGA-II population size for a budget: a fifth of it, between 8 and 50."""
    return int(min(50, max(8, n_trials // 5)))
