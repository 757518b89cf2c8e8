"""The predictor: its cost model, its settings, and that screening beats random sampling."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from netsculpt.errors import InputError, UnknownNameError
from netsculpt.studies._pareto import hypervolume
from netsculpt.studies.predictor import Predictor, ScreeningSampler, _fit_quadratic


def test_quadratic_cost_model_recovers_a_product_of_widths() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0.25, 1.0, size=(24, 4))
    cost = 0.2 * X[:, 0] * X[:, 1] + 0.5 * X[:, 1] * X[:, 2] + 0.3 * X[:, 3]
    Xc = rng.uniform(0.25, 1.0, size=(50, 4))
    expected = 0.2 * Xc[:, 0] * Xc[:, 1] + 0.5 * Xc[:, 1] * Xc[:, 2] + 0.3 * Xc[:, 3]
    mean, std = _fit_quadratic(X, cost, Xc)
    assert np.max(np.abs(mean - expected)) < 0.01
    assert np.all(std < 0.01)


def test_predictor_settings_are_validated() -> None:
    with pytest.raises(InputError, match="n_candidates"):
        Predictor(n_candidates=0)
    with pytest.raises(UnknownNameError, match="svm"):
        Predictor(model="svm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="local_fraction"):
        Predictor(local_fraction=1.5)


DIMS = 5
DISTS = {f"k{i}": optuna.distributions.FloatDistribution(0.25, 1.0, step=0.05) for i in range(DIMS)}


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = np.array([trial.suggest_float(n, d.low, d.high, step=d.step) for n, d in DISTS.items()])
    weights = np.array([0.05, 0.1, 0.2, 0.3, 0.35])
    score = float(1.0 - np.sum(weights * (1.0 - x) ** 2) * 3.0)  # some widths matter more
    cost = float(np.mean(x[:-1] * x[1:]))  # like MACs: products of neighbouring widths
    return score, cost


def _hv(study: optuna.Study) -> float:
    values = np.array([t.values for t in study.trials if t.values is not None])
    return hypervolume(np.column_stack([-values[:, 0], values[:, 1]]), np.array([0.0, 1.0]))


def test_screening_finds_a_better_front_than_random_sampling() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gains = []
    for seed in range(2):
        plain = optuna.create_study(
            directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed)
        )
        plain.optimize(_objective, n_trials=24)
        screened = optuna.create_study(
            directions=["maximize", "minimize"],
            sampler=ScreeningSampler(
                optuna.samplers.RandomSampler(seed=seed),
                distributions=DISTS,
                encode=lambda params: [params[n] for n in DISTS],
                maximize=[True, False],
                config=Predictor(min_trials=8, n_candidates=16),
                seed=seed,
            ),
        )
        screened.optimize(_objective, n_trials=24)
        predicted = [t for t in screened.trials if "netsculpt:predicted" in t.system_attrs]
        assert len(predicted) == 24 - 8
        gains.append(_hv(screened) - _hv(plain))
    assert np.mean(gains) > 0 and min(gains) > -0.01, gains


def _feasible_share(
    limits: list[tuple[int, float]], seed: int, bound: float
) -> tuple[float, float]:
    """Share of screened trials with cost <= bound, and their best score."""
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=ScreeningSampler(
            optuna.samplers.RandomSampler(seed=seed),
            distributions=DISTS,
            encode=lambda params: [params[n] for n in DISTS],
            maximize=[True, False],
            config=Predictor(min_trials=8, n_candidates=16),
            seed=seed,
            limits=limits,
        ),
    )
    study.optimize(_objective, n_trials=24)
    screened = [t for t in study.trials[8:] if t.values is not None]
    feasible = [t.values[0] for t in screened if t.values[1] <= bound]
    return len(feasible) / len(screened), max(feasible, default=-np.inf)


def test_screening_aims_inside_limits_on_objectives() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bound = 0.3  # a cost only small sub-networks meet
    for seed in range(2):
        share_free, best_free = _feasible_share([], seed, bound)
        share, best = _feasible_share([(1, bound)], seed, bound)
        assert share >= 0.75 and share > share_free, (share, share_free)
        assert best >= best_free - 1e-9, (best, best_free)


def test_screening_limits_must_name_an_objective() -> None:
    with pytest.raises(InputError, match="limits"):
        ScreeningSampler(
            optuna.samplers.RandomSampler(),
            distributions=DISTS,
            encode=lambda params: [params[n] for n in DISTS],
            maximize=[True, False],
            config=Predictor(),
            limits=[(2, 1.0)],
        )
