"""The result of a search: the Pareto front of a study, and the sub-networks on it.

>>> front = ns.search(model, inputs, task=task, n_trials=60)     # doctest: +SKIP
>>> best = front.pick(max_latency_ms=5.0)                       # doctest: +SKIP
>>> small = best.model                                          # doctest: +SKIP

In a super-network study (``ns.search(supernet, ...)``, ``front.kind == "supernet"``)
each trial also holds its sub-network (``trial.arch``), and ``trial.model`` is
``supernet.extract(arch, calib=...)`` on the super-network passed to :meth:`Front.load`.

A :class:`Front` reads everything from the Optuna study (trial user attrs and the study's
``netsculpt:*`` user attrs), so :meth:`Front.load` reopens any stored search.

Two scores per trial, with two roles. ``score`` is the task's **validation** score: the
search optimised it, and the front, :meth:`Front.pick`, :meth:`Front.knee` and every other
choice read it. ``test_score`` is the same sub-network's **test** score: shown beside it,
the figure to claim, and never read by any choice (None for a study written before test
scores were recorded, one run with ``test_scores=False``, or a task without a test split).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from netsculpt.errors import (
    ConstraintError,
    InputError,
    NetsculptError,
    SearchError,
    StudyMismatchError,
)
from netsculpt.studies._pareto import pareto_mask, to_losses
from netsculpt.studies._settings import (
    BASELINE_ATTR,
    STUDY_ATTR,
    SUPERNET,
    check_baseline,
    read_settings,
    user_attrs,
)
from netsculpt.studies.objective import METRICS, OBJECTIVES, TEST_SCORE
from netsculpt.studies.space import PRECISION

__all__ = ["STUDY_ATTR", "SUPERNET_LINE", "Baseline", "Front", "FrontTrial"]

#: how reports and ``netsculpt pareto`` mark a super-network study
SUPERNET_LINE = (
    "super-network search: trials are slices of one trained super-network, no retraining"
)
#: longest plan JSON read from a trial (a plan of a 70B-parameter model is a few MB)
_MAX_PLAN_CHARS = 64 * 1024 * 1024


@dataclass(frozen=True)
class Baseline:
    """Scores and measurements of the dense (unpruned) model.

    Attributes:
        score: the validation score (what the trials are compared with).
        test_score: the test score (None when not recorded; see the module docstring).
        size_bytes: the dense model's parameters and buffers in bytes (None when not
            recorded).
    """

    score: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int
    test_score: float | None = None
    size_bytes: int | None = None


class _Materialiser:
    """Rebuilds trial models: ``ns.apply`` on the base model, then recovery if used.

    The base model is the caller's (an ``nn.Module``, or a spec the caller typed), else the
    model spec stored in the study, which runs only when it is a built-in name or the
    caller passed ``trust_code=True`` (see ``_specs.check_stored_model_spec``); the same
    holds for the task.
    """

    def __init__(
        self,
        model: nn.Module | str | None,
        task: Any,
        recover_budget: Any,
        model_spec: str | None,
        task_name: str | None,
        *,
        study_name: str,
        example_inputs: Any = None,
        trust_code: bool = False,
        recover: Any = None,
    ) -> None:
        self._model = model if isinstance(model, nn.Module) else None
        self._typed_spec = model if isinstance(model, str) else None
        self._inputs: Any = example_inputs
        self._task = task
        if isinstance(recover_budget, dict):  # stored as {"steps": ..., "seconds": ...}
            from netsculpt.recovery.budget import Budget

            recover_budget = Budget(**recover_budget)
        self.recover_budget = recover_budget
        self.recover = recover  # the study's recovery recipe (None: the task's own)
        self.model_spec = model_spec
        self.task_name = task_name
        self.study_name = study_name
        self.trust_code = trust_code
        self._lock = threading.Lock()

    def _spec(self) -> str | None:
        """The spec to build the base model from: the caller's, else the study's (checked)."""
        if self._typed_spec is not None:
            return self._typed_spec
        if not self.model_spec:
            return None
        from netsculpt.studies._specs import check_stored_model_spec

        return check_stored_model_spec(
            self.model_spec, study=self.study_name, trust_code=self.trust_code
        )

    def _build_base(self) -> None:
        spec = self._spec()
        if spec is None:
            raise SearchError(
                "this front has no base model to apply plans to; pass it with "
                "Front.load(storage, study_name, model=your_model) (the study was not "
                "started from a 'package.module:factory' or built-in model name)"
            )
        from netsculpt.studies._specs import resolve_model

        model, inputs = resolve_model(spec, allow_files=self._typed_spec is not None)
        self._model = model
        if self._inputs is None:
            self._inputs = inputs

    def base_model(self) -> nn.Module:
        with self._lock:
            if self._model is None:
                self._build_base()
            assert self._model is not None
            return self._model

    def example_inputs(self) -> Any:
        with self._lock:
            if self._inputs is None and (self._typed_spec is not None or self.model_spec):
                if self._model is None:
                    self._build_base()
                else:
                    from netsculpt.studies._specs import resolve_model

                    spec = self._spec()
                    assert spec is not None
                    _, self._inputs = resolve_model(spec, allow_files=self._typed_spec is not None)
            if self._inputs is None:
                raise SearchError(
                    "the example inputs of this study are unknown here (it was not started "
                    "from a 'package.module:factory' or built-in model name); pass them with "
                    "Front.load(storage, study_name, model=..., example_inputs=...), or "
                    "export from Python: ns.export_onnx(front.pick(...).model, inputs, path)"
                )
            return self._inputs

    def task(self) -> Any:
        with self._lock:
            if self._task is None:
                if not self.task_name:
                    raise SearchError(
                        f"{self._task_needed}; pass it with Front.load(storage, study_name, "
                        f"model=..., task=your_task)"
                    )
                from netsculpt.tasks.registry import task_from_data

                self._task = task_from_data(
                    self.task_name,
                    source=f"study {self.study_name!r}",
                    trust_code=self.trust_code,
                )
            elif isinstance(self._task, str):  # a name the caller typed
                from netsculpt.tasks.registry import get_task

                self._task = get_task(self._task)
            return self._task

    #: why a task is needed, for the error when the front has none
    _task_needed = "the study used recovery but this front has no task to recover with"

    def build(self, plan: Any, arch: Mapping[str, Any] | None = None) -> nn.Module:
        """The sub-network of a trial: ``ns.apply(base, plan)``, recovered if the study
        recovered (``arch`` is for super-network studies)."""
        from netsculpt.pruning.apply import apply

        base = self.base_model()
        small = apply(base, plan)
        if self.recover_budget is not None:
            from netsculpt.recovery.recipe import recover

            small = recover(
                small, self.task(), self.recover_budget, teacher=base, config=self.recover
            )
        return small


class _SupernetMaterialiser(_Materialiser):
    """Rebuilds trial models of a super-network study: ``supernet.extract(arch, calib=...)``
    on the super-network the caller passes (a study never names code that makes one), with
    the batch-norm statistics recomputed on the task's training batches as in the search."""

    _task_needed = (
        "the trials of this super-network study recompute their batch-norm statistics on "
        "the task's training batches, but this front has no task"
    )

    def __init__(
        self,
        supernet: Any,
        task: Any,
        task_name: str | None,
        *,
        study_name: str,
        bn_calib_batches: int,
        example_inputs: Any = None,
        trust_code: bool = False,
    ) -> None:
        super().__init__(
            None,
            task,
            None,
            None,
            task_name,
            study_name=study_name,
            example_inputs=example_inputs,
            trust_code=trust_code,
        )
        self._supernet = supernet
        self.bn_calib_batches = bn_calib_batches
        self._calib: list[Any] | None = None

    def _missing(self) -> SearchError:
        return SearchError(
            f"study {self.study_name!r} is a super-network search: its trials are slices of "
            f"a trained super-network, which the study does not hold; pass it with "
            f"Front.load(storage, study_name, model=supernet) (e.g. supernet = "
            f"netsculpt.supernets.io.load_supernet(folder))"
        )

    def base_model(self) -> nn.Module:
        if self._supernet is None:
            raise self._missing()
        return self._supernet  # type: ignore[no-any-return]

    def example_inputs(self) -> Any:
        if self._inputs is not None:
            return self._inputs
        if self._supernet is None:
            raise self._missing()
        return self._supernet.example_inputs

    def build(self, plan: Any, arch: Mapping[str, Any] | None = None) -> nn.Module:
        from netsculpt.studies._supernet import has_batchnorm

        supernet: Any = self.base_model()
        if arch is None:
            raise SearchError(f"study {self.study_name!r}: this trial records no sub-network")
        calib = None
        if has_batchnorm(supernet.model):
            task = self.task()
            with self._lock:
                if self._calib is None:
                    self._calib = list(task.calib_batches(self.bn_calib_batches))
                calib = self._calib
        return supernet.extract(arch, calib=calib)  # type: ignore[no-any-return]


#: ``FrontTrial.export_quantized``'s default tolerance between the search's validation
#: score and the exported int8 model's test score (absolute, in score units)
DEFAULT_QUANT_TOLERANCE = 0.02


@dataclass(frozen=True)
class QuantizedExport:
    """What :meth:`FrontTrial.export_quantized` wrote and found.

    Attributes:
        model: the written :class:`~netsculpt.QuantizedModel`.
        trial: the trial number.
        validation_score: the score the search measured (validation split).
        test_score: the exported int8 model's score on the test split.
        tolerance: the largest accepted ``|test_score - validation_score|``.
    """

    model: Any
    trial: int
    validation_score: float
    test_score: float
    tolerance: float

    @property
    def gap(self) -> float:
        """``test_score - validation_score``."""
        return self.test_score - self.validation_score

    @property
    def within_tolerance(self) -> bool:
        """Whether the test score is within ``tolerance`` of the validation score."""
        return abs(self.gap) <= self.tolerance + 1e-12

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (what ``<name>.check.json`` holds)."""
        return {
            "trial": self.trial,
            "path": str(self.model.path),
            "validation_score": self.validation_score,
            "test_score": self.test_score,
            "gap": self.gap,
            "tolerance": self.tolerance,
            "within_tolerance": self.within_tolerance,
        }


@dataclass(frozen=True)
class FrontTrial:
    """One evaluated sub-network of a study.

    Attributes:
        number: the Optuna trial number.
        plan: the ``ns.Plan`` that makes it from the base model.
        score: the task's validation score (higher is better): what the search optimised
            and every selection (the front, ``pick``, ``knee``) reads.
        latency_ms, latency_p90_ms: median and 90th percentile latency.
        params, macs: parameter count and multiply-accumulates per forward.
        test_score: the task's test score of the same sub-network, for reporting only
            (never selected on); None when not recorded.
        params_dict: the trial's Optuna parameters (keep ratios, importance, round_to, ...).
        arch: in a super-network study, the sub-network (choice name -> units kept, or
            whether a block is kept); None in a pruning study.
        precision: an int8 trial's precision (``{"*": "int8"}``, or stage -> precision);
            None for a float trial.
        quantize: the :class:`~netsculpt.QuantizeConfig` an int8 trial was quantized with;
            None for a float trial.
        size_bytes: size of the trial's model (the quantized ONNX file of an int8 trial,
            the parameters and buffers of a float one); None when not recorded.
    """

    number: int
    plan: Any
    score: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int
    test_score: float | None = None
    params_dict: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    arch: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    precision: Mapping[str, str] | None = field(default=None, compare=False)
    quantize: Any = field(default=None, repr=False, compare=False)
    size_bytes: int | None = field(default=None, repr=False, compare=False)
    _materialiser: _Materialiser | None = field(default=None, repr=False, compare=False)

    @property
    def quantized(self) -> bool:
        """Whether the trial ran as an int8 model (``ns.quantize`` of its sub-network)."""
        return self.quantize is not None

    @property
    def model(self) -> nn.Module:
        """The sub-network: ``ns.apply(base_model, plan)``, recovered if the study recovered;
        in a super-network study ``supernet.extract(arch, calib=...)`` (batch-norm
        statistics recomputed on the task's training batches, as in the search).

        Each access builds a fresh copy; the base model is untouched.
        """
        if self._materialiser is None:
            raise SearchError(
                f"trial {self.number} has no base model attached; reopen the study with "
                f"Front.load(storage, study_name, model=your_model)"
            )
        return self._materialiser.build(self.plan, arch=self.arch)

    def quantized_model(self, path: str | os.PathLike[str] | None = None) -> Any:
        """The int8 model the search scored: :attr:`model` quantized with the trial's
        :attr:`quantize` options (static mode calibrates on the task's ``calib_batches``,
        as the search did) and written to ``path`` (``.onnx``; default: a temporary
        folder). Returns a :class:`~netsculpt.QuantizedModel`.

        Raises:
            SearchError: the trial is a float trial, or no base model is attached.
        """
        if self.quantize is None:
            raise SearchError(
                f"trial {self.number} is a float trial (the search did not quantize it); use "
                f"trial.model, or pick an int8 trial (trial.quantized is True)"
            )
        from netsculpt.quantization.api import quantize

        small = self.model
        assert self._materialiser is not None  # self.model checked it
        calib = None
        if self.quantize.mode == "static":
            calib = list(self._materialiser.task().calib_batches(self.quantize.calib_batches))
        return quantize(
            small, self._materialiser.example_inputs(), self.quantize, calib=calib, path=path
        )

    def export_quantized(
        self, path: str | os.PathLike[str], *, tolerance: float = DEFAULT_QUANT_TOLERANCE
    ) -> QuantizedExport:
        """Write the trial's int8 model to ``path`` (``.onnx``, recipe beside it) and check
        it: its score on the task's **test** split must match the validation score the
        search measured within ``tolerance`` (absolute, in the task's score units; 0.02 is
        two points of accuracy or recall). The check is written beside the model as
        ``<name>.check.json``; a gap beyond the tolerance warns (the files are kept: the
        numbers are the finding).

        Raises:
            SearchError: a float trial, or no base model or task attached.
            InputError: ``tolerance`` is not a number >= 0.
        """
        import warnings

        from netsculpt._checks import check_number
        from netsculpt.tasks.base import checked_score

        check_number(tolerance, "tolerance", minimum=0.0)
        quantized = self.quantized_model(path)
        assert self._materialiser is not None
        test = checked_score(self._materialiser.task(), quantized.as_module(), "test")
        result = QuantizedExport(
            model=quantized,
            trial=self.number,
            validation_score=self.score,
            test_score=float(test),
            tolerance=float(tolerance),
        )
        check = quantized.path.with_name(quantized.path.stem + ".check.json")
        check.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if not result.within_tolerance:
            warnings.warn(
                f"trial {self.number}: the int8 model scores {result.test_score:.4f} on the "
                f"test split, {result.gap:+.4f} from the {self.score:.4f} the search measured "
                f"on validation (tolerance {tolerance}); the search's ranking of it may not "
                f"hold on new data",
                UserWarning,
                stacklevel=2,
            )
        return result

    def value(self, name: str) -> float:
        """The objective ``name`` (``"score"``, ``"latency_ms"``, ``"params"``, ...)."""
        if name not in OBJECTIVES:  # the test score is never an objective
            raise InputError(f"{name!r} is not an objective; choose from {', '.join(OBJECTIVES)}")
        return float(getattr(self, name))


def _trial_from_frozen(
    t: FrozenTrial, materialiser: _Materialiser | None, study_name: str, *, supernet: bool = False
) -> FrontTrial:
    """A :class:`FrontTrial` from a finished trial's user attrs, each checked: a study is
    data, and a trial that netsculpt did not write this way is refused with SearchError."""
    from netsculpt.pruning.plan import Plan

    attrs = t.user_attrs

    def bad(field: str, value: Any) -> SearchError:
        text = repr(value)
        return SearchError(
            f"study {study_name!r}, trial {t.number}: the stored {field} "
            f"{text if len(text) <= 80 else text[:77] + '...'} is not what netsculpt writes; "
            f"the study was edited or not written by netsculpt: pick another study"
        )

    def number(field: str, *, integer: bool = False, minimum: float | None = None) -> Any:
        value = attrs[field]
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise bad(field, value)
        number = float(value)
        if not math.isfinite(number) or (minimum is not None and number < minimum):
            raise bad(field, value)
        return int(value) if integer else number

    text = attrs["plan"]
    if not isinstance(text, str) or len(text) > _MAX_PLAN_CHARS:
        raise bad("plan", text if not isinstance(text, str) else f"<{len(text):,} characters>")
    try:
        plan = Plan.from_json(text)
    except NetsculptError as exc:
        raise SearchError(
            f"study {study_name!r}, trial {t.number}: its stored plan is invalid ({exc}); the "
            f"study was edited or not written by netsculpt: pick another study"
        ) from exc
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise SearchError(
            f"study {study_name!r}, trial {t.number}: its stored plan cannot be read "
            f"({type(exc).__name__}); the study was edited or not written by netsculpt: pick "
            f"another study"
        ) from None
    precision = _precision_of(attrs, bad)
    if precision["quantize"] is not None:
        # the int8 trial's precision per layer is part of its plan: a model built from it
        # (trial.model, ns.save) quantizes the same way with ns.quantize
        try:
            plan = plan.with_precision(precision["precision"], precision["quantize"])
        except NetsculptError:
            raise bad("precision", precision["precision"]) from None
    return FrontTrial(
        number=t.number,
        plan=plan,
        score=number("score"),
        latency_ms=number("latency_ms", minimum=0.0),
        latency_p90_ms=number("latency_p90_ms", minimum=0.0),
        params=number("params", integer=True, minimum=0),
        macs=number("macs", integer=True, minimum=0),
        test_score=number(TEST_SCORE) if attrs.get(TEST_SCORE) is not None else None,
        params_dict=dict(t.params),
        arch=_arch_of(t, bad) if supernet else None,
        **precision,
        size_bytes=number("size_bytes", integer=True, minimum=0)
        if attrs.get("size_bytes") is not None
        else None,
        _materialiser=materialiser,
    )


def _precision_of(attrs: Mapping[str, Any], bad: Any) -> dict[str, Any]:
    """An int8 trial's ``precision`` and ``quantize`` attrs, each checked (data only: the
    config is rebuilt field by field, nothing it names is imported)."""
    from netsculpt.quantization.config import QuantizeConfig
    from netsculpt.studies.space import PRECISIONS

    stored = attrs.get("quantize")
    if stored is None:
        return {"precision": None, "quantize": None}
    if not isinstance(stored, Mapping):
        raise bad("quantize", stored)
    try:
        config = QuantizeConfig.from_dict(stored)
    except NetsculptError:
        raise bad("quantize", stored) from None
    precision = attrs.get("precision", {"*": "int8"})
    if (
        not isinstance(precision, Mapping)
        or len(precision) > 1000
        or not all(isinstance(k, str) and v in PRECISIONS for k, v in precision.items())
    ):
        raise bad("precision", precision)
    return {"precision": dict(precision), "quantize": config}


def _arch_of(t: FrozenTrial, bad: Any) -> dict[str, Any]:
    """The sub-network a super-network trial chose: its parameters, each checked."""
    arch: dict[str, Any] = {}
    for name, value in t.params.items():
        if name == PRECISION:  # the trial's precision, not a choice of the sub-network
            continue
        ok = isinstance(value, bool) or (isinstance(value, int) and value >= 1)
        if not isinstance(name, str) or len(name) > 1000 or not ok:
            raise bad("sub-network", {name: value})
        arch[name] = value
    return arch


def _constraint_values(t: FrozenTrial) -> list[float] | None:
    values = t.user_attrs.get("constraints")
    if values is None:
        return None
    if not isinstance(values, list) or len(values) > 16:
        raise SearchError(
            f"trial {t.number} stores constraint values {values!r:.80}, not a short list of "
            f"numbers; the study was edited or not written by netsculpt: pick another study"
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise SearchError(
                f"trial {t.number} stores the constraint value {v!r:.80}, not a number; the "
                f"study was edited or not written by netsculpt: pick another study"
            )
        out.append(float(v))
    return out


class Front:
    """The Pareto front of a netsculpt study, and every completed trial behind it.

    Attributes:
        study: the Optuna study (open it with optuna-dashboard too).
        objectives: the objective names, e.g. ``("score", "latency_ms", "params")``.
        trials: the Pareto-optimal, feasible trials, fastest first.
        completed: every completed trial, by number.
        failed: ``(number, reason)`` of the trials that failed in the task or the plan.
        baseline: the dense model's validation and test scores and measurements (None if
            never measured).
        constraints: the study's constraints, e.g. ``{"max_latency_ms": 5.0}``.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        model: nn.Module | str | None = None,
        task: Any = None,
        example_inputs: Any = None,
        trust_code: bool = False,
    ) -> None:
        if not isinstance(study, optuna.Study):
            raise InputError(
                f"Front needs an optuna.Study, got {type(study).__name__}; open a stored "
                f"search with Front.load(storage, study_name)"
            )
        model, task = _check_model_task(model, task, trust_code)
        name = study.study_name
        attrs = user_attrs(study)
        settings = read_settings(name, attrs)
        if settings is None:
            raise SearchError(
                f"study {name!r} was not created by netsculpt (it has no "
                f"'{STUDY_ATTR}settings' user attr); run ns.search to create it, or pick "
                f"another study_name"
            )
        #: ``"prune"`` (trials are plans applied to the model) or ``"supernet"`` (slices
        #: of one trained super-network, never retrained)
        self.kind: str = settings["kind"]
        #: the ElasticConfig dict of a super-network study's super-network (else None)
        self.elastic: dict[str, Any] | None = settings["elastic"]
        model = _check_kind(model, self.kind, name, settings["signature"])
        self.study = study
        self.objectives: tuple[str, ...] = tuple(settings["objectives"])
        base = check_baseline(name, attrs.get(BASELINE_ATTR))
        self.baseline: Baseline | None = Baseline(**base) if base else None  # type: ignore[arg-type]
        self.constraints: dict[str, float] = dict(settings["constraints"])
        self.backend: str = settings["backend"]
        self.recover_budget = settings["recover_budget"]
        #: the study's StudyConfig, as stored (objectives, space, recovery, ...)
        self.config = settings["config"]
        self._materialiser: _Materialiser
        if self.kind == SUPERNET:
            self._materialiser = _SupernetMaterialiser(
                model,
                task,
                settings["task"],
                study_name=name,
                bn_calib_batches=self.config.bn_calib_batches,
                example_inputs=example_inputs,
                trust_code=trust_code,
            )
        else:
            self._materialiser = _Materialiser(
                model,
                task,
                self.recover_budget if settings["recovered"] else None,
                settings["model_spec"],
                settings["task"],
                study_name=name,
                example_inputs=example_inputs,
                trust_code=trust_code,
                recover=settings["recover"],
            )
        try:
            frozen = study.get_trials(deepcopy=False)
        except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SearchError(
                f"the trials of study {name!r} cannot be decoded ({type(exc).__name__}); the "
                f"storage was damaged or not written by Optuna: pick another study"
            ) from None
        done = [
            t
            for t in frozen
            if t.state == TrialState.COMPLETE
            and all(m in t.user_attrs for m in METRICS)
            and "plan" in t.user_attrs
        ]
        self._frozen = {t.number: t for t in done}
        self._constraint_values = {t.number: _constraint_values(t) for t in done}
        self.completed: tuple[FrontTrial, ...] = tuple(
            _trial_from_frozen(t, self._materialiser, name, supernet=self.kind == SUPERNET)
            for t in done
        )
        self._by_number = {t.number: t for t in self.completed}
        self.failed: tuple[tuple[int, str], ...] = tuple(
            (t.number, str(t.user_attrs["fail_reason"])[:2000])
            for t in frozen
            if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs
        )
        self.trials: tuple[FrontTrial, ...] = tuple(self._front_over(self.completed))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        storage: str | Any | None,
        study_name: str,
        *,
        model: nn.Module | str | None = None,
        task: Any = None,
        example_inputs: Any = None,
        trust_code: bool = False,
    ) -> Front:
        """Reopen the stored study ``study_name`` (``storage`` as in :func:`netsculpt.search`).

        Args:
            storage: where the study lives (as in :func:`netsculpt.search`).
            study_name: the study.
            model: the base model the plans apply to (an ``nn.Module``, or a built-in name
                or ``"package.module:factory"`` string you write here). Without it, the
                model is rebuilt from the name stored in the study when that is a built-in
                name; a stored factory string is imported only with ``trust_code=True``,
                and a stored file path never. For a super-network study (``front.kind ==
                "supernet"``), the :class:`~netsculpt.Supernet` the search sliced: trial
                models are ``supernet.extract(arch, calib=...)``, and a super-network with
                another space is refused.
            task: the task, needed only to re-run recovery, or, in a super-network study
                of a model with batch norm, for the training batches its statistics are
                recomputed on (same rules for a stored name).
            example_inputs: the inputs for ONNX export (default: the factory's).
            trust_code: run the factory or task import string stored in the study. A study
                is data: set this only for studies whose author you trust.

        Raises:
            SearchError: no such study, or its stored settings or trials are not what
                netsculpt writes.
            StudyMismatchError: ``model`` is a super-network whose space is not the one
                the study searched.
            UntrustedCodeError: (on first use of ``.model``) the study names code to run
                and ``trust_code`` is False.
        """
        from netsculpt.studies.storage import load_study

        if not isinstance(study_name, str) or not study_name:
            raise InputError(f"study_name must be a non-empty string, got {study_name!r}")
        return cls(
            load_study(storage, study_name),
            model=model,
            task=task,
            example_inputs=example_inputs,
            trust_code=trust_code,
        )

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
        """The ``"package.module:factory"`` or built-in name the search started from, as
        stored in the study (data: nothing runs it without ``trust_code=True``)."""
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
        values = self._constraint_values.get(trial.number)
        return values is None or all(v <= 0.0 for v in values)

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
        """The feasible trial with the best validation score under the limits (ties: the
        faster one).

        The choice reads the validation ``score`` only (``min_score`` bounds it too); the
        picked trial's ``test_score`` is the figure to report, never part of the choice.

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
            f"trial {t.number} (val score {t.score:.4g}, {t.latency_ms:.3g} ms, "
            f"{t.params:,} params)"
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

    def front_of(self, *, quantized: bool | None = None) -> list[FrontTrial]:
        """The Pareto front (the study's objectives, feasible trials, fastest first) over
        every trial (``None``), the float trials only (``False``) or the int8 trials only
        (``True``): a study that searched precision shows what quantization added by
        comparing ``front_of(quantized=False)`` with ``trials``."""
        if quantized is None:
            return list(self.trials)
        return self._front_over([t for t in self.completed if t.quantized is quantized])

    def _front_over(self, trials: Sequence[FrontTrial]) -> list[FrontTrial]:
        """The feasible Pareto-optimal trials among ``trials``, fastest first."""
        feasible = [t for t in trials if self.is_feasible(t)]
        return sorted(_pareto(feasible, self.objectives), key=lambda t: (t.latency_ms, -t.score))

    def score_latency_front(self) -> list[FrontTrial]:
        """The trials of the front that no other feasible trial beats on score and latency,
        fastest first."""
        two_d = _pareto(list(self.trials), ("score", "latency_ms")) or list(self.trials)
        return sorted(two_d, key=lambda t: t.latency_ms)

    def rows(self, trials: Sequence[FrontTrial] | None = None) -> list[dict[str, Any]]:
        """Plain dicts for tables: number, validation score (``score``), test score
        (``test_score``, None when not recorded), latency, p90, params, MACs, speedup."""
        out = []
        for t in self.trials if trials is None else trials:
            out.append(
                {
                    "trial": t.number,
                    "score": t.score,
                    "test_score": t.test_score,
                    "latency_ms": t.latency_ms,
                    "latency_p90_ms": t.latency_p90_ms,
                    "params": t.params,
                    "macs": t.macs,
                    "speedup": self.speedup(t),
                    "precision": "int8" if t.quantized else "float",
                    "size_bytes": t.size_bytes,
                }
            )
        return out

    def to_json(self) -> str:
        """The front (and the baseline) as JSON, plans included."""
        return json.dumps(
            {
                "study": self.study_name,
                "objectives": list(self.objectives),
                "kind": self.kind,
                "baseline": None if self.baseline is None else self.baseline.__dict__,
                "trials": [
                    {
                        **row,
                        **({} if t.arch is None else {"arch": dict(t.arch)}),
                        "plan": json.loads(t.plan.to_json()),
                    }
                    for row, t in zip(self.rows(), self.trials, strict=False)
                ],
            },
            indent=2,
        )


def _check_model_task(model: Any, task: Any, trust_code: Any) -> tuple[Any, Any]:
    from netsculpt._checks import check_model

    if not isinstance(trust_code, bool):
        raise InputError(f"trust_code must be True or False, got {trust_code!r}")
    if model is not None and not isinstance(model, str):
        check_model(model)
    if isinstance(model, str) and not model.strip():
        raise InputError("model='' is empty; pass the base model or its factory string")
    if (
        task is not None
        and not isinstance(task, str)
        and not callable(getattr(task, "evaluate", None))
    ):
        raise InputError(
            f"task must be an ns.Task (or a task name), got {type(task).__name__}; e.g. "
            f"task=ns.get_task('digits')"
        )
    return model, task


def _check_kind(model: Any, kind: str, study: str, signature: str | None) -> Any:
    """``model`` when it suits a study of ``kind``: a super-network study takes the
    super-network it searched (same space), a pruning study any other model."""
    from netsculpt.studies._supernet import is_supernet, supernet_signature

    if kind == SUPERNET:
        if model is None:
            return None
        if not is_supernet(model):
            raise InputError(
                f"study {study!r} is a super-network search: its trials are slices of a "
                f"super-network, so pass the ns.Supernet it searched (model=supernet), not "
                f"{type(model).__name__ if not isinstance(model, str) else repr(model)}"
            )
        found = supernet_signature(model)
        if found != signature:
            raise StudyMismatchError(
                f"study {study!r} searched a super-network with space signature "
                f"{signature!r}, but the one passed has {found!r} (another model, "
                f"ElasticConfig or space); pass the super-network the study searched"
            )
        return model
    if is_supernet(model):
        raise InputError(
            f"study {study!r} is a pruning search (plans applied to a model), not a "
            f"super-network search; pass the model it pruned, not a Supernet"
        )
    return model


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
