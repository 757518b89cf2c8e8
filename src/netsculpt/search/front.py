"""The result of a search: the Pareto front of a study, and the sub-networks on it.

>>> front = ns.search(model, inputs, task=task, n_trials=60)     # doctest: +SKIP
>>> best = front.pick(max_latency_ms=5.0)                       # doctest: +SKIP
>>> small = best.model                                          # doctest: +SKIP

A :class:`Front` reads everything from the Optuna study (trial user attrs and the study's
``netsculpt:*`` user attrs), so :meth:`Front.load` reopens any stored search.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from netsculpt.errors import ConstraintError, SearchError
from netsculpt.search._pareto import pareto_mask, to_losses
from netsculpt.search.objective import METRICS, OBJECTIVES

__all__ = ["STUDY_ATTR", "Baseline", "Front", "FrontTrial"]

#: prefix of the study user attrs netsculpt writes
STUDY_ATTR = "netsculpt:"


@dataclass(frozen=True)
class Baseline:
    """Score and measurements of the dense (unpruned) model."""

    score: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int


class _Materialiser:
    """Rebuilds trial models: ``ns.apply`` on the base model, then recovery if used."""

    def __init__(
        self,
        model: nn.Module | None,
        task: Any,
        recover_budget: Any,
        model_spec: str | None,
        task_name: str | None,
    ) -> None:
        self._model = model
        self._inputs: Any = None
        self._task = task
        if isinstance(recover_budget, dict):  # stored as {"steps": ..., "seconds": ...}
            from netsculpt.recover.budget import Budget

            recover_budget = Budget(**recover_budget)
        self.recover_budget = recover_budget
        self.model_spec = model_spec
        self.task_name = task_name
        self._lock = threading.Lock()

    def base_model(self) -> nn.Module:
        with self._lock:
            if self._model is None:
                if not self.model_spec:
                    raise SearchError(
                        "this front has no base model to apply plans to; pass it with "
                        "Front.load(storage, study_name, model=your_model) (the study was not "
                        "started from a 'package.module:factory' or built-in model name)"
                    )
                from netsculpt.search.cli_commands import resolve_model

                self._model, self._inputs = resolve_model(self.model_spec)
            return self._model

    def example_inputs(self) -> Any:
        self.base_model()
        with self._lock:
            if self._inputs is None and self.model_spec:
                from netsculpt.search.cli_commands import resolve_model

                _, self._inputs = resolve_model(self.model_spec)
            if self._inputs is None:
                raise SearchError(
                    "the example inputs of this study are unknown here (it was not started "
                    "from a 'package.module:factory' or built-in model name); export from "
                    "Python, e.g. ns.export_onnx(front.pick(...).model, inputs, path)"
                )
            return self._inputs

    def task(self) -> Any:
        with self._lock:
            if self._task is None:
                if not self.task_name:
                    raise SearchError(
                        "the study used recovery but this front has no task to recover with; "
                        "pass it with Front.load(storage, study_name, model=..., task=your_task)"
                    )
                from netsculpt.tasks.registry import get_task

                self._task = get_task(self.task_name)
            return self._task

    def build(self, plan: Any) -> nn.Module:
        from netsculpt.prune.apply import apply

        base = self.base_model()
        small = apply(base, plan)
        if self.recover_budget is not None:
            small = self.task().finetune(small, base, self.recover_budget) or small
        return small


@dataclass(frozen=True)
class FrontTrial:
    """One evaluated sub-network of a study.

    Attributes:
        number: the Optuna trial number.
        plan: the ``ns.Plan`` that makes it from the base model.
        score: the task's score (higher is better).
        latency_ms, latency_p90_ms: median and 90th percentile latency.
        params, macs: parameter count and multiply-accumulates per forward.
        params_dict: the trial's Optuna parameters (keep ratios, importance, round_to, ...).
    """

    number: int
    plan: Any
    score: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int
    params_dict: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _materialiser: _Materialiser | None = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> nn.Module:
        """The sub-network: ``ns.apply(base_model, plan)``, recovered if the study recovered.

        Each access builds a fresh copy; the base model is untouched.
        """
        if self._materialiser is None:
            raise SearchError(
                f"trial {self.number} has no base model attached; reopen the study with "
                f"Front.load(storage, study_name, model=your_model)"
            )
        return self._materialiser.build(self.plan)

    def value(self, name: str) -> float:
        """The metric ``name`` (``"score"``, ``"latency_ms"``, ``"params"``, ...)."""
        return float(getattr(self, name))


def _trial_from_frozen(t: FrozenTrial, materialiser: _Materialiser | None) -> FrontTrial:
    from netsculpt.prune.plan import Plan

    attrs = t.user_attrs
    return FrontTrial(
        number=t.number,
        plan=Plan.from_json(attrs["plan"]),
        score=float(attrs["score"]),
        latency_ms=float(attrs["latency_ms"]),
        latency_p90_ms=float(attrs["latency_p90_ms"]),
        params=int(attrs["params"]),
        macs=int(attrs["macs"]),
        params_dict=dict(t.params),
        _materialiser=materialiser,
    )


class Front:
    """The Pareto front of a netsculpt study, and every completed trial behind it.

    Attributes:
        study: the Optuna study (open it with optuna-dashboard too).
        objectives: the objective names, e.g. ``("score", "latency_ms", "params")``.
        trials: the Pareto-optimal, feasible trials, fastest first.
        completed: every completed trial, by number.
        failed: ``(number, reason)`` of the trials that failed in the task or the plan.
        baseline: the dense model's score and measurements (None if never measured).
        constraints: the study's constraints, e.g. ``{"max_latency_ms": 5.0}``.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        model: nn.Module | None = None,
        task: Any = None,
    ) -> None:
        attrs = study.user_attrs
        if STUDY_ATTR + "objectives" not in attrs:
            raise SearchError(
                f"study {study.study_name!r} was not created by netsculpt (it has no "
                f"'{STUDY_ATTR}objectives' user attr); run ns.search to create it, or pick "
                f"another study_name"
            )
        self.study = study
        self.objectives: tuple[str, ...] = tuple(attrs[STUDY_ATTR + "objectives"])
        base = attrs.get(STUDY_ATTR + "baseline")
        self.baseline: Baseline | None = Baseline(**base) if base else None
        self.constraints: dict[str, float] = dict(attrs.get(STUDY_ATTR + "constraints") or {})
        self.backend: str = attrs.get(STUDY_ATTR + "backend", "torch")
        self.recover_budget = attrs.get(STUDY_ATTR + "recover_budget")
        task_name = attrs.get(STUDY_ATTR + "task")
        self._materialiser = _Materialiser(
            model, task, self.recover_budget, attrs.get(STUDY_ATTR + "model_spec"), task_name
        )
        frozen = study.get_trials(deepcopy=False)
        done = [
            t
            for t in frozen
            if t.state == TrialState.COMPLETE
            and all(m in t.user_attrs for m in METRICS)
            and "plan" in t.user_attrs
        ]
        self._frozen = {t.number: t for t in done}
        self.completed: tuple[FrontTrial, ...] = tuple(
            _trial_from_frozen(t, self._materialiser) for t in done
        )
        self._by_number = {t.number: t for t in self.completed}
        self.failed: tuple[tuple[int, str], ...] = tuple(
            (t.number, str(t.user_attrs["fail_reason"]))
            for t in frozen
            if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs
        )
        feasible = [t for t in self.completed if self.is_feasible(t)]
        self.trials: tuple[FrontTrial, ...] = tuple(
            sorted(_pareto(feasible, self.objectives), key=lambda t: (t.latency_ms, -t.score))
        )

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        storage: str | Any | None,
        study_name: str,
        *,
        model: nn.Module | None = None,
        task: Any = None,
    ) -> Front:
        """Reopen the stored study ``study_name`` (``storage`` as in :func:`netsculpt.search`).

        ``model`` is the base model the plans apply to; without it, the model is rebuilt
        from the ``"package.module:factory"`` or built-in name the search was started with,
        when there was one. ``task`` is needed only to re-run recovery.
        """
        from netsculpt.search.api import load_study

        return cls(load_study(storage, study_name), model=model, task=task)

    # -- queries --------------------------------------------------------------------------------
    @property
    def study_name(self) -> str:
        return self.study.study_name

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[FrontTrial]:
        return iter(self.trials)

    def __getitem__(self, index: int) -> FrontTrial:
        return self.trials[index]

    def __repr__(self) -> str:
        return (
            f"Front(study={self.study_name!r}, objectives={self.objectives}, "
            f"{len(self.trials)} on the front of {len(self.completed)} completed trials)"
        )

    def example_inputs(self) -> Any:
        """The example inputs of the model spec the search was started from."""
        return self._materialiser.example_inputs()

    @property
    def model_spec(self) -> str | None:
        """The ``"package.module:factory"`` or built-in name the search started from."""
        return self._materialiser.model_spec

    def trial(self, number: int) -> FrontTrial:
        """The completed trial ``number`` (on the front or not)."""
        try:
            return self._by_number[number]
        except KeyError:
            known = sorted(self._by_number)
            raise SearchError(
                f"study {self.study_name!r} has no completed trial {number}; completed trials: "
                f"{_short_list(known)}"
            ) from None

    def is_feasible(self, trial: FrontTrial) -> bool:
        """Whether ``trial`` satisfies the study's constraints."""
        values = (
            self._frozen[trial.number].user_attrs.get("constraints")
            if trial.number in self._frozen
            else None
        )
        return values is None or all(float(v) <= 0.0 for v in values)

    def speedup(self, trial: FrontTrial) -> float | None:
        """Dense latency / trial latency, when the baseline was measured."""
        if self.baseline is None or trial.latency_ms <= 0:
            return None
        return self.baseline.latency_ms / trial.latency_ms

    def pick(
        self,
        max_latency_ms: float | None = None,
        max_params: int | None = None,
        min_score: float | None = None,
        *,
        max_macs: int | None = None,
    ) -> FrontTrial:
        """The highest-scoring feasible trial under the limits (ties: the faster one).

        Raises:
            ConstraintError: no completed trial satisfies the limits; the message lists the
                closest trials.
        """
        limits: dict[str, tuple[float | None, float]] = {
            "latency_ms": (max_latency_ms, 1.0),
            "params": (max_params, 1.0),
            "macs": (max_macs, 1.0),
            "score": (min_score, -1.0),
        }
        active = {k: (float(b), s) for k, (b, s) in limits.items() if b is not None}
        pool = [t for t in self.completed if self.is_feasible(t)]
        ok = [t for t in pool if all(_excess(t, k, b, s) <= 0 for k, (b, s) in active.items())]
        if ok:
            return max(ok, key=lambda t: (t.score, -t.latency_ms, -t.params))
        asked = ", ".join(f"{'min' if s < 0 else 'max'}_{k}={b}" for k, (b, s) in active.items())
        if not pool:
            raise ConstraintError(
                f"study {self.study_name!r} has no completed trial to pick from (asked for "
                f"{asked or 'any trial'}); run the search (more trials) first"
            )

        def violation(t: FrontTrial) -> float:
            return float(
                sum(
                    max(0.0, _excess(t, k, b, s)) / max(abs(b), 1e-12)
                    for k, (b, s) in active.items()
                )
            )

        closest = sorted(pool, key=violation)[:3]
        described = "; ".join(
            f"trial {t.number} (score {t.score:.4g}, {t.latency_ms:.3g} ms, {t.params:,} params)"
            for t in closest
        )
        raise ConstraintError(
            f"no trial of study {self.study_name!r} satisfies {asked} "
            f"({len(pool)} completed trials); the closest are: {described}; loosen the "
            f"limit, or run more trials with constraints={{...}} so the search aims for it"
        )

    def knee(self) -> FrontTrial:
        """The knee of the score/latency front: the best trade-off between the extremes.

        On the score-vs-latency front (scaled to [0, 1] both ways), the knee is the trial
        farthest above the straight line from the fastest to the best-scoring trial, i.e.
        the one that gives up the least score for the most speed; when no trial lies above
        that line, the trial closest to the ideal point (best score, lowest latency).
        """
        if not self.trials:
            raise ConstraintError(
                f"study {self.study_name!r} has no completed feasible trial yet; run the search"
            )
        two_d = self.score_latency_front()
        scores = np.array([t.score for t in two_d])
        lat = np.array([t.latency_ms for t in two_d])

        def scale(x: np.ndarray) -> np.ndarray:
            span = x.max() - x.min()
            return (x - x.min()) / span if span > 0 else np.zeros_like(x)

        s_n, l_n = scale(scores), scale(lat)
        above = s_n - l_n  # the chord from (fastest) to (best score) is s_n == l_n
        if len(two_d) > 2 and above.max() > 1e-9:
            return two_d[int(np.argmax(above))]
        return two_d[int(np.argmin(np.hypot(1.0 - s_n, l_n)))]

    def score_latency_front(self) -> list[FrontTrial]:
        """The trials of the front that no other feasible trial beats on score and latency,
        fastest first."""
        two_d = _pareto(list(self.trials), ("score", "latency_ms")) or list(self.trials)
        return sorted(two_d, key=lambda t: t.latency_ms)

    def rows(self, trials: Sequence[FrontTrial] | None = None) -> list[dict[str, Any]]:
        """Plain dicts for tables: number, score, latency, p90, params, MACs, speedup."""
        out = []
        for t in self.trials if trials is None else trials:
            out.append(
                {
                    "trial": t.number,
                    "score": t.score,
                    "latency_ms": t.latency_ms,
                    "latency_p90_ms": t.latency_p90_ms,
                    "params": t.params,
                    "macs": t.macs,
                    "speedup": self.speedup(t),
                }
            )
        return out

    def to_json(self) -> str:
        """The front (and the baseline) as JSON, plans included."""
        return json.dumps(
            {
                "study": self.study_name,
                "objectives": list(self.objectives),
                "baseline": None if self.baseline is None else self.baseline.__dict__,
                "trials": [
                    {**row, "plan": json.loads(t.plan.to_json())}
                    for row, t in zip(self.rows(), self.trials, strict=False)
                ],
            },
            indent=2,
        )


def _excess(t: FrontTrial, key: str, bound: float, sign: float) -> float:
    return sign * (float(getattr(t, key)) - float(bound))


def _pareto(trials: list[FrontTrial], objectives: Sequence[str]) -> list[FrontTrial]:
    if not trials:
        return []
    values = np.array([[t.value(o) for o in objectives] for t in trials], dtype=float)
    losses = to_losses(values, [OBJECTIVES[o] for o in objectives])
    finite = np.all(np.isfinite(losses), axis=1)
    idx = np.flatnonzero(finite)
    mask = pareto_mask(losses[idx])
    return [trials[i] for i in idx[mask]]


def _short_list(numbers: list[int]) -> str:
    if len(numbers) <= 12:
        return ", ".join(map(str, numbers)) or "none"
    return ", ".join(map(str, numbers[:12])) + f", ... ({len(numbers)} in all)"
