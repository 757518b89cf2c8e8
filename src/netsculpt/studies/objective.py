"""One trial: parameters -> plan -> smaller model -> (recovery) -> score and measurements.

The objective records everything it learns on the trial as user attrs, so a study is
readable without netsculpt (optuna-dashboard shows them):

``plan`` (the plan JSON), ``plan_hash``, ``score``, ``latency_ms``, ``latency_p90_ms``,
``params``, ``macs``, ``constraints`` (values ``<= 0`` are satisfied), ``worker`` (who ran
it), ``cached_from`` (the trial whose results an identical plan reused) and, for a
failed trial, ``fail_reason``.

``score`` is the task's **validation** score (``task.evaluate(model, "validation")``): the
objective, and all that the sampler, the predictor, constraints and every selection read.
``test_score`` is the same model's **test** score (``task.evaluate(model, "test")``), kept
beside it for reports and never read by any choice. It is absent when the study turned it
off (``test_scores=False``) or the task's ``evaluate`` takes no split (it has one held-out
set, so there is no separate test score to give); a test evaluation that raises or returns
no finite number leaves ``test_fail_reason`` instead and the trial still completes (the
test split must not decide which trials survive).

Measurements are cached per plan (the hash of its JSON): an identical plan, from this
process or any finished trial in the study, is not applied, scored or timed again.

**Quantized trials.** When the space offers int8 (``SearchSpace(precision=("float",
"int8"))``), a trial whose precision is int8 records ``precision`` (``{"*": "int8"}``, or
stage -> precision) and ``quantize`` (the ``QuantizeConfig`` it was quantized with, as a
dict). Its sub-network is pruned and recovered as any trial, quantized with
``ns.quantize`` (static mode calibrates on ``task.calib_batches``, training data), scored
by running the quantized ONNX model on the task (validation, and test for reports) and
timed in onnxruntime; ``params`` and ``macs`` are the pruned model's, ``size_bytes`` the
quantized file's. Its cache key is the plan's JSON together with the quantization options,
so the float and int8 versions of one plan are two entries.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna
from optuna.trial import TrialState
from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, SearchError, TrainingError, UnknownNameError
from netsculpt.studies._resume import owner_record
from netsculpt.studies.samplers import constraint_values
from netsculpt.studies.space import BoundSpace, plan_hash
from netsculpt.tasks.base import _takes_split, checked_score

__all__ = [
    "METRICS",
    "OBJECTIVES",
    "TEST_SCORE",
    "Evaluator",
    "TrialFailed",
    "check_objectives",
    "measure_model",
]

#: objective name -> whether it is maximised
OBJECTIVES: dict[str, bool] = {
    "score": True,
    "latency_ms": False,
    "latency_p90_ms": False,
    "params": False,
    "macs": False,
}
#: every metric a trial records
METRICS = ("score", "latency_ms", "latency_p90_ms", "params", "macs")
#: what a trial records beside the metrics when measured: size on disk (or in memory), and
#: for an int8 trial how many layers are int8 and which stayed float, with the reason
_EXTRAS = ("size_bytes", "int8_layers", "float_layers")
#: the trial (and baseline) attr holding the test-split score: reported, never selected on
TEST_SCORE = "test_score"
#: default options of ns.measure inside the search loop
DEFAULT_MEASURE = {"warmup": 5, "repeats": 30, "memory": False}
#: longest wait for another process evaluating the same plan (then evaluate it here too)
TWIN_WAIT_S = 3600.0


class TrialFailed(Exception):
    """Raised by the objective after recording ``fail_reason``; Optuna marks the trial FAIL."""


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """Validate objective names; returns them as a tuple."""
    if isinstance(objectives, str):
        objectives = (objectives,)
    if isinstance(objectives, Mapping) or not isinstance(objectives, (list, tuple)):
        raise InputError(
            f"objectives must be a tuple of names, got {type(objectives).__name__} "
            f"({objectives!r:.60}); e.g. objectives=('score', 'latency_ms')"
        )
    objectives = tuple(objectives)
    for name in objectives:
        if not isinstance(name, str):
            raise InputError(
                f"objectives must hold names (strings), got {name!r} ({type(name).__name__}); "
                f"choose from {', '.join(OBJECTIVES)}"
            )
    if not objectives:
        raise UnknownNameError(
            f"objectives=() is empty; use some of {', '.join(OBJECTIVES)}, "
            f"e.g. ('score', 'latency_ms')"
        )
    for name in objectives:
        if name not in OBJECTIVES:
            raise UnknownNameError(
                f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}"
            )
    if len(set(objectives)) != len(objectives):
        raise UnknownNameError(f"objectives {objectives} repeat a name; list each once")
    return objectives


def measure_model(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    backend: str,
    measure_options: Mapping[str, Any],
) -> dict[str, float]:
    """Latency (median, p90), params and MACs of ``model`` with ``ns.measure``."""
    from netsculpt.measurement.api import measure

    m = measure(model, example_inputs, backend=backend, **dict(measure_options))
    out: dict[str, float] = {
        "latency_ms": float(m.latency_ms_median),
        "latency_p90_ms": float(m.latency_ms_p90),
        "params": int(m.params),
        "macs": int(m.macs),
    }
    size = getattr(m, "size_bytes", None)
    if size is not None:
        out["size_bytes"] = int(size)
    return out


@dataclass
class Evaluator:
    """The Optuna objective of a netsculpt search (one per process)."""

    model: nn.Module
    example_inputs: ExampleInputs
    task: Any
    bound: BoundSpace
    objectives: tuple[str, ...]
    backend: str = "torch"
    measure_options: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_MEASURE))
    recover_budget: Any = None
    #: the recovery recipe (a TrainConfig or DistillConfig); None for the task's own
    recover: Any = None
    constraints: Mapping[str, float] = field(default_factory=dict)
    graph: Any = None
    #: also score each trial (and the dense model) on the task's test split, for reports
    test_scores: bool = True
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _plans: dict[tuple[Any, ...], tuple[Any, str, str]] = field(default_factory=dict)
    _calib: list[Any] | None = None
    _quant_calib: list[Any] | None = None

    # -- baseline --------------------------------------------------------------------------
    def baseline(self) -> dict[str, float]:
        """Validation score, test score (when the task has one) and measurements of the
        dense model."""
        dense = self._dense_model()
        try:
            score = self._score(dense)
        except TrainingError as exc:
            raise SearchError(
                f"the task {getattr(self.task, 'name', type(self.task).__name__)!r} cannot "
                f"score the dense model ({exc}); evaluate(model) must return a finite float "
                f"(higher is better) before a search can rank sub-networks"
            ) from None
        test_score, _ = self._test_score(dense)
        metrics = measure_model(
            dense,
            self.example_inputs,
            backend=self.backend,
            measure_options=self.measure_options,
        )
        out = {"score": float(score), **metrics}
        if test_score is not None:
            out[TEST_SCORE] = test_score
        return out

    def _dense_model(self) -> nn.Module:
        """The model the baseline scores and times (the searched model itself)."""
        return self.model

    # -- the objective ---------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        trial.set_user_attr("worker", owner_record())
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "stopped by Ctrl-C (KeyboardInterrupt) mid-trial")
            raise

    def _run(self, trial: optuna.Trial) -> tuple[float, ...]:
        params = self.bound.suggest(trial)
        try:
            plan, plan_json, key = self._plan_for(params)
        except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
            self._fail(trial, "plan", exc)
        quantize = self._quantize_config(params)
        if quantize is not None:
            key = _quantized_key(plan_json, quantize)
            trial.set_user_attr("precision", self.bound.precision(params))  # type: ignore[attr-defined]
            trial.set_user_attr("quantize", quantize.to_dict())
        trial.set_user_attr("plan", plan_json)
        trial.set_user_attr("plan_hash", key)

        cached = (
            self._cache.get(key)
            or self._from_study(trial.study, key)
            or self._from_twin(trial, key)
        )
        if cached is not None:
            metrics = dict(cached["metrics"])
            test_score = cached.get(TEST_SCORE)
            trial.set_user_attr("cached_from", int(cached["trial"]))
        else:
            metrics, test_score = self._evaluate(trial, plan, quantize)
            self._cache[key] = {
                "metrics": metrics,
                TEST_SCORE: test_score,
                "trial": trial.number,
            }
        for name in (*METRICS, *_EXTRAS):
            if name in metrics:
                trial.set_user_attr(name, metrics[name])
        if test_score is not None:  # for reports only: nothing below reads it
            trial.set_user_attr(TEST_SCORE, test_score)
        if self.constraints:
            values = constraint_values(self.constraints, metrics)
            trial.set_user_attr("constraints", values)
            if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read these
                for key, value in zip(self.constraints, values, strict=False):
                    trial.set_constraint(key, value)
        return tuple(float(metrics[name]) for name in self.objectives)

    def _plan_for(self, params: Mapping[str, Any]) -> tuple[Any, str, str]:
        """``(plan, plan JSON, plan hash)`` of ``params``; the last few are remembered, so
        a plan built to screen a candidate is not built again when the trial runs it."""
        key = tuple(sorted(params.items()))
        found = self._plans.get(key)
        if found is None:
            plan = self.bound.to_plan(
                self.model,
                self.example_inputs,
                params,
                graph=self.graph,
                calib=self._calib_batches(params),
            )
            plan_json = plan.to_json()
            found = (plan, plan_json, plan_hash(plan_json))
            self._plans[key] = found
            while len(self._plans) > 64:
                self._plans.pop(next(iter(self._plans)))
        return found

    def plan_key(self, params: Mapping[str, Any]) -> str:
        """The hash of the plan ``params`` give, with their quantization options when the
        trial is int8 (the predictor skips candidates already seen)."""
        _, plan_json, key = self._plan_for(params)
        quantize = self._quantize_config(params)
        return key if quantize is None else _quantized_key(plan_json, quantize)

    def _quantize_config(self, params: Mapping[str, Any]) -> Any:
        """The trial's ``QuantizeConfig``, or None for a float trial (or a space without
        precision, such as a super-network's)."""
        choose = getattr(self.bound, "quantize_config", None)
        return choose(params) if callable(choose) else None

    def _evaluate(
        self, trial: optuna.Trial, plan: Any, quantize: Any = None
    ) -> tuple[dict[str, Any], float | None]:
        """The metrics of ``plan`` (validation score, latency, params, MACs) and, apart, its
        test score (None when not scored). With a ``QuantizeConfig`` the sub-network is
        quantized first, and the quantized ONNX model is scored and timed instead."""
        started = time.perf_counter()
        small = self._build(trial, plan)
        with contextlib.ExitStack() as stack:
            scored: Any = small
            timed: Any = small
            what, extra = "", {}
            if quantize is not None:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="netsculpt-"))
                quantized = self._quantize(trial, small, quantize, Path(folder))
                scored, timed, what = quantized.as_module(), quantized, " of the quantized model"
                extra = {
                    "int8_layers": len(quantized.quantized),
                    "float_layers": [f"{c.node}: {c.reason}" for c in quantized.kept_float][:50],
                }
            try:
                score = self._score(scored)
            except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
                self._fail(trial, "task.evaluate" + what, exc)
            test_score, test_failure = self._test_score(scored)
            if test_failure is not None:
                trial.set_user_attr("test_fail_reason", test_failure[:2000])
            try:
                metrics = measure_model(
                    timed,
                    self.example_inputs,
                    backend=self.backend,
                    measure_options=self.measure_options,
                )
            except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
                self._fail(trial, "measure" + what, exc)
        trial.set_user_attr("eval_seconds", round(time.perf_counter() - started, 4))
        return {"score": float(score), **metrics, **extra}, test_score

    def _quantize(self, trial: optuna.Trial, small: nn.Module, quantize: Any, folder: Path) -> Any:
        """``ns.quantize`` of the trial's sub-network into ``folder``; fails the trial when
        it cannot be quantized."""
        from netsculpt.quantization.api import quantize as quantize_model

        try:
            return quantize_model(
                small,
                self.example_inputs,
                quantize,
                calib=self._quantize_calib(quantize),
                path=folder / "model.int8.onnx",
            )
        except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
            self._fail(trial, "quantize", exc)

    def _quantize_calib(self, quantize: Any) -> list[Any] | None:
        """Static mode's calibration batches: the task's ``calib_batches`` (training data)."""
        if quantize.mode != "static":
            return None
        if self._quant_calib is None:
            self._quant_calib = list(self.task.calib_batches(quantize.calib_batches))
        return self._quant_calib

    def _build(self, trial: optuna.Trial, plan: Any) -> nn.Module:
        """The trial's sub-network: ``ns.apply(model, plan)``, recovered when the study
        recovers (recording ``recover_steps``)."""
        from netsculpt.pruning.apply import apply

        try:
            small = apply(self.model, plan)
        except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
            self._fail(trial, "apply", exc)
        if self.recover_budget is not None:
            from netsculpt.recovery.recipe import StepCounter, recover

            counter = StepCounter()
            try:
                small = recover(
                    small,
                    self.task,
                    self.recover_budget,
                    teacher=self.model,
                    config=self.recover,
                    callbacks=[counter],
                )
            except Exception as exc:  # noqa: BLE001 -- any error of user code fails the trial
                self._fail(trial, "recovery", exc)
            trial.set_user_attr("recover_steps", counter.steps)
        return small

    def _score(self, model: nn.Module) -> float:
        """The validation score: what the search optimises and every selection reads."""
        return checked_score(self.task, model, "validation")

    def _test_score(self, model: nn.Module) -> tuple[float | None, str | None]:
        """``(test score, None)``, ``(None, why it failed)``, or ``(None, None)`` when test
        scores are off or the task's ``evaluate`` takes no split (its one held-out set is
        the validation split, already scored)."""
        if not self.test_scores or not _takes_split(self.task.evaluate):
            return None, None
        try:
            return checked_score(self.task, model, "test"), None
        except Exception as exc:  # noqa: BLE001 -- user code; the trial is kept regardless
            return None, f"task.evaluate(model, 'test') failed: {type(exc).__name__}: {exc}"

    def _calib_batches(self, params: Mapping[str, Any]) -> list[Any] | None:
        """The task's calibration batches when the trial's criterion declares needs_calib."""
        from netsculpt.pruning.importance import criterion_info

        if not criterion_info(str(params["importance"])).needs_calib:
            return None
        if self._calib is None:
            self._calib = list(self.task.calib_batches(self.bound.space.calib_batches))
        return self._calib

    def _from_study(self, study: optuna.Study, key: str) -> dict[str, Any] | None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            found = _results_of(t, key)
            if found is not None:
                self._cache[key] = found
                return found
        return None

    def _from_twin(self, trial: optuna.Trial, key: str) -> dict[str, Any] | None:
        """Wait for an identical plan that another process is evaluating right now.

        A process sharing the study (a worker, or another run on the same storage) may have
        drawn the same plan a moment earlier: the trial with the lower number evaluates it,
        the others wait for its results instead of evaluating it again. Waiting ends when
        that trial finishes (its results are reused), fails, or its process dies.
        """
        from netsculpt.studies._resume import owner_alive

        deadline = time.monotonic() + TWIN_WAIT_S
        study = trial.study
        while time.monotonic() < deadline:
            waiting = False
            states = (TrialState.RUNNING, TrialState.COMPLETE)
            for t in study.get_trials(deepcopy=False, states=states):
                if t.number >= trial.number or t.user_attrs.get("plan_hash") != key:
                    continue
                if t.state == TrialState.COMPLETE:
                    found = _results_of(t, key)
                    if found is not None:
                        self._cache[key] = found
                        return found
                elif owner_alive(t.user_attrs.get("worker")) is not False:
                    waiting = True
            if not waiting:
                return None
            time.sleep(0.25)
        return None

    @staticmethod
    def _fail(trial: optuna.Trial, stage: str, exc: BaseException) -> NoReturn:
        where = traceback.extract_tb(exc.__traceback__)
        at = f" at {where[-1].filename.rsplit('/', 1)[-1]}:{where[-1].lineno}" if where else ""
        reason = f"{stage} failed: {type(exc).__name__}: {exc}{at}"
        trial.set_user_attr("fail_reason", reason[:2000])
        raise TrialFailed(reason) from exc


def _quantized_key(plan_json: str, quantize: Any) -> str:
    """The cache key of an int8 trial: its plan together with its quantization options."""
    return plan_hash(f"{plan_json}\nquantize={quantize.to_json()}")


def _results_of(t: Any, key: str) -> dict[str, Any] | None:
    """The metrics a finished trial recorded for the plan ``key``, if complete and sane."""
    attrs = t.user_attrs
    if attrs.get("plan_hash") != key:
        return None
    metrics = {}
    for m in METRICS:
        value = attrs.get(m)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return None
        metrics[m] = value
    for name in _EXTRAS:  # recorded when measured; copied as they are (reports only)
        if name in attrs:
            metrics[name] = attrs[name]
    source = attrs.get("cached_from", t.number)
    if isinstance(source, bool) or not isinstance(source, int):
        source = t.number
    return {"metrics": metrics, TEST_SCORE: _finite(attrs.get(TEST_SCORE)), "trial": source}


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
