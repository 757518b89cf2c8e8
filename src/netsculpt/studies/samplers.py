"""Optuna samplers by name: ``"nsga2"`` (default), ``"tpe"`` and ``"random"``, seeded.

Constraints (``max_latency_ms=...``) reach NSGA-II and TPE through Optuna's constraint
support (``Trial.set_constraint`` in Optuna 5, ``constraints_func`` before); every trial
also stores its constraint values (``<= 0`` is feasible) as the user attr ``"constraints"``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from netsculpt.errors import InputError, UnknownNameError

__all__ = [
    "CONSTRAINT_KEYS",
    "SAMPLERS",
    "SeededPerProcess",
    "check_constraints",
    "constraint_values",
    "make_sampler",
]

SAMPLERS = ("nsga2", "tpe", "random")

#: constraint name -> (measured quantity, +1 for an upper bound / -1 for a lower bound)
CONSTRAINT_KEYS: dict[str, tuple[str, float]] = {
    "max_latency_ms": ("latency_ms", 1.0),
    "max_latency_p90_ms": ("latency_p90_ms", 1.0),
    "max_params": ("params", 1.0),
    "max_macs": ("macs", 1.0),
    "min_score": ("score", -1.0),
}


_EXAMPLES = {
    "max_latency_ms": 5.0,
    "max_latency_p90_ms": 6.0,
    "max_params": 1_000_000,
    "max_macs": 100_000_000,
    "min_score": 0.9,
}


def check_constraints(constraints: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a constraints mapping such as ``{"max_latency_ms": 5.0}``."""
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise InputError(
            f"constraints must be a dict such as {{'max_latency_ms': 5.0}}, got "
            f"{type(constraints).__name__} ({constraints!r:.60})"
        )
    out: dict[str, float] = {}
    for key, bound in constraints.items():
        if key not in CONSTRAINT_KEYS:
            raise UnknownNameError(
                f"unknown constraint {key!r}; use any of {', '.join(CONSTRAINT_KEYS)}, e.g. "
                f"constraints={{'max_latency_ms': 5.0}}"
            )
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise InputError(
                f"constraint {key!r} needs a number, got {bound!r} ({type(bound).__name__}); "
                f"e.g. constraints={{{key!r}: {_EXAMPLES[key]}}}"
            )
        if not math.isfinite(bound):
            raise InputError(f"constraint {key!r} must be finite, got {bound!r}")
        if key.startswith("max_") and bound <= 0:
            raise InputError(
                f"constraint {key}={bound!r} leaves no sub-network (latency, params and MACs "
                f"are positive); pass a positive limit, e.g. {key}={_EXAMPLES[key]}"
            )
        out[key] = float(bound)
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


class SeededPerProcess(BaseSampler):
    """Builds the real sampler when this process gets its first trial, seeded from the
    user's seed, the worker index and that trial's number.

    Trial numbers are handed out once per study by the storage, so processes that share a
    study (workers, or independent runs on one journal file or database) draw different
    streams even with the same seed; a lone process resuming the same study state still
    draws the same stream. ``build(seed)`` makes the sampler (``seed`` None when the user
    passed ``seed=None``).
    """

    def __init__(
        self, build: Callable[[int | None], BaseSampler], *, seed: int | None, worker: int
    ) -> None:
        self._build = build
        self._seed = seed
        self._worker = worker
        self._sampler: BaseSampler | None = None
        self.first_trial: int | None = None

    @property
    def sampler(self) -> BaseSampler:
        """The sampler in use (built with the seed of trial 0 before any trial exists)."""
        return self._inner(None)

    def _inner(self, number: int | None) -> BaseSampler:
        if self._sampler is None:
            self.first_trial = number
            seed = None
            if self._seed is not None:
                entropy = [self._seed, self._worker, 0 if number is None else number + 1]
                seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            self._sampler = self._build(seed)
        return self._sampler

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._inner(trial.number).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._inner(trial.number).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._inner(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner(None).reseed_rng()
