"""Predictor-assisted search: a surrogate screens candidates before one is evaluated.

Evaluating a sub-network (apply a plan, maybe recover it, score it, time it) is costly;
predicting its objectives from the trial parameters is not. :class:`ScreeningSampler`
wraps any Optuna sampler: for each new trial it draws ``n_candidates`` parameter sets
(some from the wrapped sampler, some by mutating trials on the current front), predicts
their objectives with scikit-learn regressors fitted on the finished trials (by default a
Gaussian process for the score, a quadratic ridge regression for latency, params and
MACs), and lets the trial evaluate only the candidate with the largest predicted
hypervolume gain. The
optimistic prediction ``mean - kappa * std`` (in the minimised space) keeps exploring where
the surrogate is unsure. Until ``min_trials`` trials have finished, it samples exactly like
the wrapped sampler.

With constraints on objectives (``ns.search(constraints={"max_latency_ms": ...})`` while
latency is an objective), screening aims inside them: the hypervolume gain is taken
against the front of the feasible trials, and a candidate predicted to break a limit is
only chosen when no candidate is predicted to keep them all (then the one predicted to
break them least). Hardware-aware searches spend their evaluations where the deployment
budget holds, instead of on the fast-but-poor and slow-but-good ends of the front.

The surrogate learns from the trials' objective values only: the score there is the
validation score. A trial's ``test_score`` user attr is never read (choosing on it would
make the reported test figure a selected one).

>>> Predictor(n_candidates=32, model="random_forest").model
'random_forest'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from netsculpt.errors import InputError, UnknownNameError
from netsculpt.studies._pareto import hypervolume, normalise, pareto_mask, to_losses

__all__ = ["Predictor", "ScreeningSampler"]

_MODELS = ("random_forest", "extra_trees", "gradient_boosting", "gaussian_process")


@dataclass(frozen=True, kw_only=True)
class Predictor:
    """Settings of the surrogate that screens candidates (``ns.search(predictor=...)``).

    Attributes:
        n_candidates: parameter sets drawn per trial; only the most promising is evaluated.
        min_trials: finished trials needed before the surrogate is used.
        model: the scikit-learn regressor of the score (maximised objectives):
            ``"gaussian_process"`` (default; Matern kernel, one length scale per
            parameter), ``"random_forest"`` or ``"extra_trees"`` (the spread of the trees is
            the uncertainty) or ``"gradient_boosting"`` (no uncertainty). Costs (latency,
            params, MACs) always use a quadratic ridge regression.
        kappa: optimism; a candidate is judged at ``mean - kappa * std`` of its losses.
        local_fraction: share of candidates made by mutating trials on the current front
            (the rest come from the wrapped sampler).
        mutation_scale: standard deviation of a mutation, in units of the keep-ratio range.
        max_plan_checks: how many of the best candidates are turned into plans, to skip
            those whose plan (after rounding) a trial has already evaluated.
    """

    n_candidates: int = 64
    min_trials: int = 10
    model: Literal["random_forest", "extra_trees", "gradient_boosting", "gaussian_process"] = (
        "gaussian_process"
    )
    kappa: float = 0.5
    local_fraction: float = 0.5
    mutation_scale: float = 0.15
    max_plan_checks: int = 8

    def __post_init__(self) -> None:
        if self.n_candidates < 1 or self.min_trials < 2:
            raise InputError(
                f"Predictor needs n_candidates >= 1 and min_trials >= 2, got "
                f"n_candidates={self.n_candidates}, min_trials={self.min_trials}"
            )
        if self.model not in _MODELS:
            raise UnknownNameError(
                f"unknown predictor model {self.model!r}; choose one of {', '.join(_MODELS)}"
            )
        if not (0.0 <= self.local_fraction <= 1.0) or self.kappa < 0 or self.mutation_scale <= 0:
            raise InputError(
                f"Predictor needs 0 <= local_fraction <= 1, kappa >= 0 and mutation_scale > 0, "
                f"got local_fraction={self.local_fraction}, kappa={self.kappa}, "
                f"mutation_scale={self.mutation_scale}"
            )


class ScreeningSampler(BaseSampler):
    """Wraps ``base``: draws candidates, predicts, and hands the trial the best one.

    Args:
        base: the sampler that proposes candidates (NSGA-II, TPE, random, ...).
        distributions: every parameter of the search space (name -> distribution).
        encode: parameters -> numeric feature row for the surrogate.
        maximize: per objective, whether it is maximised.
        config: the :class:`Predictor` settings.
        seed: seeds the mutations and the surrogate.
        plan_key: parameters -> hash of the plan they give; candidates whose plan was
            already evaluated are skipped (up to ``config.max_plan_checks`` are checked).
        limits: constraints on objectives as ``(objective index, bound)`` pairs on the
            minimised value (a maximised objective's value is negated: ``min_score=0.9``
            on objective 0 is ``(0, -0.9)``). A finished trial's feasibility is read from
            its ``"constraints"`` user attr (values ``<= 0`` are satisfied) when present.
    """

    def __init__(
        self,
        base: BaseSampler,
        *,
        distributions: dict[str, BaseDistribution],
        encode: Any,
        maximize: Sequence[bool],
        config: Predictor,
        seed: int | None = None,
        plan_key: Callable[[dict[str, Any]], str] | None = None,
        limits: Sequence[tuple[int, float]] = (),
    ) -> None:
        self.base = base
        self._limits = [(int(j), float(bound)) for j, bound in limits]
        if any(not 0 <= j < len(maximize) for j, _ in self._limits):
            raise InputError(
                f"ScreeningSampler limits refer to objectives {[j for j, _ in self._limits]}, "
                f"but there are {len(maximize)}; give (objective index, bound) pairs"
            )
        self._plan_key = plan_key
        self._dists = dict(distributions)
        self._encode = encode
        self._maximize = list(maximize)
        self.config = config
        self._rng = np.random.default_rng(seed)
        self._seed = seed

    # -- BaseSampler ---------------------------------------------------------------------
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.system_attrs.get("fixed_params"):
            return {}  # an enqueued (e.g. retried) trial: its parameters are fixed
        finished = self._finished(study)
        if len(finished) < self.config.min_trials:
            return self._from_base(study, trial)
        try:
            return self._screen(study, trial, finished)
        except Exception as exc:  # noqa: BLE001 -- the surrogate must never stop the search
            optuna.logging.get_logger("netsculpt").warning(
                "netsculpt predictor failed (%s: %s); sampling without it for this trial",
                type(exc).__name__,
                exc,
            )
            return self._from_base(study, trial)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = np.random.default_rng()

    # -- candidates ------------------------------------------------------------------------
    def _finished(self, study: Study) -> list[FrozenTrial]:
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.values is not None and all(k in t.params for k in self._dists):
                out.append(t)
        return out

    def _from_base(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        space = self.base.infer_relative_search_space(study, trial)
        relative = self.base.sample_relative(study, trial, space) if space else {}
        out: dict[str, Any] = {}
        for name, dist in self._dists.items():
            if name in relative and _contains(dist, relative[name]):
                out[name] = relative[name]
            elif isinstance(dist, (FloatDistribution, CategoricalDistribution)) and dist.single():
                out[name] = _single(dist)
            else:
                out[name] = self.base.sample_independent(study, trial, name, dist)
        return out

    def _mutate(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        names = list(self._dists)
        # change every parameter with probability 1/len (at least one)
        flip = self._rng.random(len(names)) < max(1.0 / len(names), 0.3)
        if not flip.any():
            flip[self._rng.integers(len(names))] = True
        for name, do in zip(names, flip, strict=False):
            if not do:
                continue
            dist = self._dists[name]
            if isinstance(dist, FloatDistribution):
                span = dist.high - dist.low
                step = self._rng.normal(0.0, self.config.mutation_scale * span)
                value = float(params[name]) + step
                value = min(max(value, dist.low), dist.high)
                if dist.step:
                    value = dist.low + round((value - dist.low) / dist.step) * dist.step
                out[name] = round(min(value, dist.high), 6)
            elif isinstance(dist, CategoricalDistribution) and len(dist.choices) > 1:
                out[name] = dist.choices[int(self._rng.integers(len(dist.choices)))]
        return out

    def _screen(
        self, study: Study, trial: FrozenTrial, finished: list[FrozenTrial]
    ) -> dict[str, Any]:
        X = np.array([self._encode(t.params) for t in finished], dtype=float)
        losses = to_losses(np.array([t.values for t in finished]), self._maximize)
        lo, hi = losses.min(axis=0), losses.max(axis=0)
        y = normalise(losses, lo, hi)
        feasible = self._feasible(finished, losses)
        front = y[feasible][pareto_mask(y[feasible])] if feasible.any() else y[pareto_mask(y)]

        n_local = round(self.config.n_candidates * self.config.local_fraction)
        n_base = max(1, self.config.n_candidates - n_local)
        candidates = [self._from_base(study, trial) for _ in range(n_base)]
        front_params = [t.params for t, keep in zip(finished, pareto_mask(y), strict=False) if keep]
        for _ in range(n_local):
            parent = front_params[int(self._rng.integers(len(front_params)))]
            candidates.append(self._mutate(dict(parent)))
        seen = {_key(t.params) for t in finished}
        fresh = [c for c in candidates if _key(c) not in seen] or candidates

        mean, std = self._predict(X, y, np.array([self._encode(c) for c in fresh], dtype=float))
        optimistic = mean - self.config.kappa * std
        reference = np.full(y.shape[1], 1.1)
        base_hv = hypervolume(front, reference)
        gains = np.array(
            [hypervolume(np.vstack([front, o]), reference) - base_hv for o in optimistic]
        )
        excess = self._excess(lo + mean * np.where(hi - lo > 0, hi - lo, 1.0), hi - lo)
        if self._limits and not (excess <= 0).any():
            # every candidate is predicted to break a limit: the least breaking one first
            order = np.argsort(excess, kind="stable")
        elif self._limits and gains[excess <= 0].max() > 1e-12:
            order = np.argsort(np.where(excess <= 0, -gains, np.inf), kind="stable")
        elif self._limits:
            eps = np.array([np.min(np.max(o - front, axis=1)) for o in optimistic])
            order = np.argsort(np.where(excess <= 0, eps, np.inf), kind="stable")
        elif gains.max() > 1e-12:
            order = np.argsort(-gains, kind="stable")
        else:
            # nothing promises a gain: prefer candidates closest to the front (additive
            # epsilon distance), so the search still moves along it
            eps = np.array([np.min(np.max(o - front, axis=1)) for o in optimistic])
            order = np.argsort(eps, kind="stable")
        best = self._first_new(study, trial, [int(i) for i in order], fresh)
        if isinstance(best, dict):  # no candidate of the surrogate was new: a base draw
            return best
        predicted = lo + mean[best] * np.where(hi - lo > 0, hi - lo, 1.0)
        signs = np.array([-1.0 if m else 1.0 for m in self._maximize])
        study._storage.set_trial_system_attr(
            trial._trial_id,
            "netsculpt:predicted",
            [float(v) for v in predicted * signs],
        )
        return fresh[best]

    def _feasible(self, finished: list[FrozenTrial], losses: np.ndarray) -> np.ndarray:
        """Which finished trials keep every limit (their stored constraint values first)."""
        if not self._limits:
            return np.ones(len(finished), dtype=bool)
        out = []
        for t, row in zip(finished, losses, strict=True):
            stored = t.user_attrs.get("constraints")
            if stored is not None:
                out.append(all(float(v) <= 0 for v in stored))
            else:
                out.append(all(row[j] <= bound for j, bound in self._limits))
        return np.array(out, dtype=bool)

    def _excess(self, predicted: np.ndarray, span: np.ndarray) -> np.ndarray:
        """Per candidate, how far its predicted losses break the limits (``<= 0``: none)."""
        if not self._limits:
            return np.zeros(len(predicted))
        parts = [
            (predicted[:, j] - bound) / (span[j] if span[j] > 0 else 1.0)
            for j, bound in self._limits
        ]
        return np.max(np.stack(parts, axis=1), axis=1)

    def _first_new(
        self,
        study: Study,
        trial: FrozenTrial,
        order: list[int],
        candidates: list[dict[str, Any]],
    ) -> int | dict[str, Any]:
        """The first candidate in ``order`` whose plan no trial has evaluated yet.

        Different parameters can give the same plan (widths are rounded to ``round_to``).
        When the ``max_plan_checks`` best candidates all give known plans, a draw of the
        wrapped sampler with a new plan is returned instead (a parameter dict). Without
        ``plan_key`` the best candidate is taken.
        """
        if self._plan_key is None:
            return order[0]
        known = {
            t.user_attrs.get("plan_hash")
            for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
            )
        }
        for i in order[: self.config.max_plan_checks]:
            try:
                key = self._plan_key(candidates[i])
            except Exception:  # noqa: BLE001 -- a plan that fails is left to the trial
                return i
            if key not in known:
                return i
        # the surrogate's favourites are all known plans: explore with the wrapped sampler
        for _ in range(self.config.max_plan_checks):
            candidate = self._from_base(study, trial)
            try:
                key = self._plan_key(candidate)
            except Exception:  # noqa: BLE001 -- a plan that fails is left to the trial
                return candidate
            if key not in known:
                return candidate
        return order[0]

    def _predict(
        self, X: np.ndarray, y: np.ndarray, Xc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of every objective (columns of ``y``) at ``Xc``.

        Scores (maximised objectives) use the configured regressor. Costs (latency, params,
        MACs) are smooth, almost deterministic functions of the keep ratios (a layer's MACs
        grow with the product of its input and output widths), so a quadratic ridge
        regression predicts them from a few trials where trees and GPs need many.
        """
        seed = None if self._seed is None else int(self._rng.integers(2**31 - 1))
        means, stds = [], []
        for j, is_score in enumerate(self._maximize):
            fit = _fit_regressor(self.config.model, seed) if is_score else _fit_quadratic
            mean, std = fit(X, y[:, j], Xc)
            means.append(mean)
            stds.append(std)
        return np.stack(means, axis=1), np.stack(stds, axis=1)


def _fit_quadratic(X: np.ndarray, y: np.ndarray, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression on degree-2 features; the uncertainty is the leave-one-out error."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    model = make_pipeline(
        PolynomialFeatures(degree=2, include_bias=False),
        StandardScaler(),
        RidgeCV(alphas=np.logspace(-4, 3, 15), store_cv_results=True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    ridge = model[-1]
    loo_mse = float(np.min(np.mean(ridge.cv_results_, axis=0)))
    mean = model.predict(Xc)
    return mean, np.full_like(mean, math.sqrt(max(loo_mse, 0.0)))


def _fit_regressor(name: str, seed: int | None) -> Any:
    """A fit-and-predict function ``(X, y, Xc) -> (mean, std)`` for the score model."""

    def forest(X: np.ndarray, y: np.ndarray, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

        cls = RandomForestRegressor if name == "random_forest" else ExtraTreesRegressor
        model = cls(n_estimators=64, random_state=seed).fit(X, y)
        per_tree = np.stack([est.predict(Xc) for est in model.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)

    def boosting(X: np.ndarray, y: np.ndarray, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.ensemble import GradientBoostingRegressor

        mean = (
            GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=seed)
            .fit(X, y)
            .predict(Xc)
        )
        return mean, np.zeros_like(mean)

    def gp(X: np.ndarray, y: np.ndarray, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        kernel = ConstantKernel(1.0) * Matern(length_scale=np.ones(X.shape[1]), nu=2.5) + (
            WhiteKernel(1e-3, noise_level_bounds=(1e-6, 1e-1))
        )
        model = GaussianProcessRegressor(
            kernel=kernel, normalize_y=True, random_state=seed, optimizer=_lbfgs_capped
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny data sets
            model.fit(X, y)
        mean, std = model.predict(Xc, return_std=True)
        return mean, std

    if name in ("random_forest", "extra_trees"):
        return forest
    if name == "gradient_boosting":
        return boosting
    return gp


def _lbfgs_capped(obj_func: Any, initial_theta: np.ndarray, bounds: np.ndarray) -> Any:
    """scikit-learn's GP optimiser (L-BFGS-B) with at most 50 iterations: enough for a
    surrogate refitted after every trial, and a fraction of the default's time."""
    from scipy.optimize import minimize

    result = minimize(
        obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds, options={"maxiter": 50}
    )
    return result.x, result.fun


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except Exception:  # noqa: BLE001 -- a value of another type is simply not contained
        return False


def _single(dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return dist.low
    assert isinstance(dist, CategoricalDistribution)
    return dist.choices[0]


def _key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, round(v, 6) if isinstance(v, float) else v) for k, v in params.items()))
