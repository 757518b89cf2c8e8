"""The options of ``ns.search`` as one value: :class:`StudyConfig` (frozen, checked, JSON).

Everything a search can write down lives in the config; the call keeps the model, the task,
where the study is stored and the runtime objects that cannot be written down (an Optuna
sampler instance, a :class:`~netsculpt.studies.Predictor`)::

    import netsculpt as ns
    from netsculpt.studies import SearchSpace, StudyConfig

    config = StudyConfig(
        n_trials=200,
        objectives=("score", "latency_ms"),
        space=SearchSpace(tie="layer", min_keep=0.3),
        constraints={"max_latency_ms": 5.0},
        recover_budget="20s",
    )
    front = ns.search(model, inputs, task=task, config=config, storage="sqlite:///s.db")

The study records the config (``netsculpt:settings``), so a resumed search, every worker
process and :meth:`netsculpt.Front.load` read the very same value back.

>>> config = StudyConfig(n_trials=50, constraints={"max_params": 1e6}, recover_budget="30s")
>>> config.recover_budget
Budget(steps=None, seconds=30.0)
>>> StudyConfig.from_json(config.to_json()) == config
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from netsculpt._checks import check_config_fields, check_int, check_number, config_json
from netsculpt.errors import InputError, UnknownNameError
from netsculpt.recovery.budget import Budget
from netsculpt.recovery.config import TrainConfig
from netsculpt.studies.objective import DEFAULT_MEASURE, check_objectives
from netsculpt.studies.samplers import SAMPLERS, check_constraints
from netsculpt.studies.space import SearchSpace

__all__ = [
    "DEFAULT_BN_CALIB_BATCHES",
    "DEFAULT_RECOVER_STEPS",
    "MEASURE_KEYS",
    "MAX_WORKERS",
    "StudyConfig",
]

#: options of ``ns.measure`` that the search loop passes through
MEASURE_KEYS = ("warmup", "repeats", "threads", "memory")
#: more worker processes than any machine runs usefully: a typo
MAX_WORKERS = 1024
#: recovery steps per trial by default: 30 distillation steps from the dense model
DEFAULT_RECOVER_STEPS = 30
#: training batches each super-network slice's batch-norm statistics are recomputed on
DEFAULT_BN_CALIB_BATCHES = 16


class FrozenDict(dict[str, Any]):
    """A dict that cannot be changed after it is built (a config is a value), and hashes."""

    def _frozen(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "a StudyConfig is frozen: build another with dataclasses.replace(config, ...)"
        )

    __setitem__ = __delitem__ = __ior__ = _frozen
    clear = pop = popitem = setdefault = update = _frozen

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def _fix(check: Any, fix: str = "") -> Any:
    """Run a shared check; prefix its message with ``StudyConfig:`` (and append ``fix``)."""
    try:
        return check()
    except InputError as exc:
        message = str(exc)
        suffix = f"; {fix}" if fix and "e.g." not in message else ""
        raise type(exc)(f"StudyConfig: {message}{suffix}") from None


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """The options of :func:`netsculpt.search` that can be written down.

    Attributes:
        n_trials: the number of trials the study should hold once done (finished trials
            of an earlier run count; failed evaluations count too).
        objectives: some of ``"score"`` (the task's validation score, maximised),
            ``"latency_ms"``, ``"latency_p90_ms"``, ``"params"``, ``"macs"`` (minimised).
        sampler: ``"nsga2"``, ``"tpe"`` or ``"random"`` (an Optuna sampler instance is
            passed to ``ns.search(sampler=...)`` instead: it cannot be written down).
        workers: worker processes on this machine, each optimising a share of the trials.
        space: the :class:`SearchSpace` (keep-ratio tying, ranges, importance criteria,
            ``round_to`` choices, block removal).
        constraints: limits the samplers aim for, any of ``max_latency_ms``,
            ``max_latency_p90_ms``, ``max_params``, ``max_macs``, ``min_score``; trials
            that break them stay in the study but are not on the front.
        predictor: screen candidates with a surrogate trained on finished trials
            (``ns.search(predictor=Predictor(...))`` sets its options).
        backend: the latency backend of ``ns.measure`` (``"torch"``, ``"onnxruntime"`` or
            a registered one; ``ns.search`` checks that it is registered). A space that
            offers int8 (``SearchSpace(precision=("float", "int8"))``) needs
            ``"onnxruntime"``: int8 trials run there.
        seed: seeds the sampler (each process draws its own stream from it); None for none.
        recover_budget: how long each trial is recovered before it is scored: steps
            (``30``), a time (``"20s"``) or a :class:`~netsculpt.Budget`; ``None`` scores
            trials as pruned, without recovery. The default, 30 steps, distils each trial
            from the dense model when the task has training data (a task without any is
            never trained).
        recover: the recovery recipe: a :class:`~netsculpt.DistillConfig` distils each
            trial from the dense model, a plain :class:`~netsculpt.TrainConfig` fine-tunes
            it on the task's loss; ``None`` takes the task's ``recovery_config``, else
            ``DistillConfig()``.
        timeout: stop starting new trials after this many seconds (per worker).
        measure_options: options of ``ns.measure`` in the loop, merged over
            ``{"warmup": 5, "repeats": 30, "memory": False}`` (also ``"threads"``).
        test_scores: also score each trial (and the dense model) on the task's test split,
            for reports only; no choice reads it.
        bn_calib_batches: a super-network search (``ns.search(supernet, ...)``) recomputes
            the batch-norm statistics of every sliced sub-network (and of the largest, the
            baseline) on this many training batches of the task
            (``task.calib_batches(n)``: 32 inputs each by default, so 16 batches are 512
            inputs) before scoring it; read only for super-networks with batch norm.
        start_from_largest: the first trials of a new study are the largest sub-network of
            the space (every keep ratio at ``max_keep``, no block removed; a super-network's
            largest), once in each precision the space offers, so the front always weighs
            the unpruned model (and, with int8, the unpruned int8 model) against the
            sampled ones. They count towards ``n_trials``; a resumed study is not seeded
            again.
    """

    n_trials: int = 100
    objectives: tuple[str, ...] = ("score", "latency_ms", "params")
    sampler: str = "nsga2"
    workers: int = 1
    space: SearchSpace = field(default_factory=SearchSpace)
    constraints: Mapping[str, float] = field(default_factory=FrozenDict)
    predictor: bool = False
    backend: str = "torch"
    seed: int | None = 0
    recover_budget: Budget | int | str | None = DEFAULT_RECOVER_STEPS
    recover: TrainConfig | None = None
    timeout: float | None = None
    measure_options: Mapping[str, Any] = field(default_factory=lambda: FrozenDict(DEFAULT_MEASURE))
    test_scores: bool = True
    bn_calib_batches: int = DEFAULT_BN_CALIB_BATCHES
    start_from_largest: bool = False

    def __post_init__(self) -> None:
        _fix(lambda: check_int(self.n_trials, "n_trials", minimum=1), "e.g. n_trials=100")
        object.__setattr__(self, "objectives", _fix(lambda: check_objectives(self.objectives)))
        if not isinstance(self.sampler, str):
            raise InputError(
                f"StudyConfig: sampler must be a name ({', '.join(SAMPLERS)}), got "
                f"{type(self.sampler).__name__}; an optuna.samplers.BaseSampler instance goes "
                f"to ns.search(sampler=...)"
            )
        if self.sampler not in SAMPLERS:
            raise UnknownNameError(
                f"StudyConfig: unknown sampler {self.sampler!r}; choose one of "
                f"{', '.join(SAMPLERS)}, or pass an optuna.samplers.BaseSampler instance to "
                f"ns.search(sampler=...)"
            )
        _fix(lambda: check_int(self.workers, "workers", minimum=1))
        if self.workers > MAX_WORKERS:
            raise InputError(
                f"StudyConfig: workers={self.workers} is more processes than any machine runs; "
                f"use e.g. 4"
            )
        if not isinstance(self.space, SearchSpace):
            raise InputError(
                f"StudyConfig: space must be a netsculpt SearchSpace, got "
                f"{type(self.space).__name__}; e.g. space=SearchSpace(tie='stage', "
                f"min_keep=0.3)"
                + (", or SearchSpace.from_dict(...)" if isinstance(self.space, Mapping) else "")
            )
        constraints = _fix(lambda: check_constraints(self.constraints))
        object.__setattr__(self, "constraints", FrozenDict(constraints))
        if not isinstance(self.predictor, bool):
            raise InputError(
                f"StudyConfig: predictor must be True or False, got {self.predictor!r}; "
                f"Predictor(...) settings go to ns.search(predictor=...)"
            )
        if not isinstance(self.backend, str) or not self.backend.strip():
            raise InputError(
                f"StudyConfig: backend must be a latency backend name such as 'torch' or "
                f"'onnxruntime', got {self.backend!r}"
            )
        _fix(lambda: check_int(self.seed, "seed", minimum=0, allow_none=True))
        if self.recover_budget is not None:
            budget = _fix(lambda: Budget.parse(self.recover_budget))  # type: ignore[arg-type]
            object.__setattr__(self, "recover_budget", budget)
        if self.recover is not None and not isinstance(self.recover, TrainConfig):
            raise InputError(
                f"StudyConfig: recover must be a DistillConfig, a TrainConfig or None (the "
                f"task's recipe), got {type(self.recover).__name__} ({self.recover!r:.60}); "
                f"e.g. recover=ns.DistillConfig(lr=1e-4)"
            )
        _fix(lambda: check_number(self.timeout, "timeout", strictly_positive=True, allow_none=True))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", float(self.timeout))
        options = _fix(lambda: _measure_options(self.measure_options))
        object.__setattr__(self, "measure_options", FrozenDict(options))
        if not isinstance(self.test_scores, bool):
            raise InputError(
                f"StudyConfig: test_scores must be True or False, got {self.test_scores!r}"
            )
        _fix(
            lambda: check_int(self.bn_calib_batches, "bn_calib_batches", minimum=1),
            "e.g. bn_calib_batches=16",
        )
        if not isinstance(self.start_from_largest, bool):
            raise InputError(
                f"StudyConfig: start_from_largest must be True or False, got "
                f"{self.start_from_largest!r}"
            )
        if self.space.quantizes and self.backend != "onnxruntime":
            raise InputError(
                f"StudyConfig: space offers precision {self.space.precision}, and an int8 "
                f"trial runs (and is timed) in onnxruntime only, but backend="
                f"{self.backend!r}; pass backend='onnxruntime' so that float and int8 trials "
                f"are timed alike"
            )

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` gives back an equal config."""
        budget = self.recover_budget  # a Budget or None once built
        return {
            "n_trials": self.n_trials,
            "objectives": list(self.objectives),
            "sampler": self.sampler,
            "workers": self.workers,
            "space": self.space.to_dict(),
            "constraints": dict(self.constraints),
            "predictor": self.predictor,
            "backend": self.backend,
            "seed": self.seed,
            "recover_budget": {"steps": budget.steps, "seconds": budget.seconds}
            if isinstance(budget, Budget)
            else None,
            "recover": None if self.recover is None else self.recover.to_dict(),
            "timeout": self.timeout,
            "measure_options": dict(self.measure_options),
            "test_scores": self.test_scores,
            "bn_calib_batches": self.bn_calib_batches,
            "start_from_largest": self.start_from_largest,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        """The config :meth:`to_dict` wrote; a missing field takes its default.

        Raises:
            InputError: ``data`` is not a dict, names a field StudyConfig does not have, or
                holds a bad value (the message names it).
        """
        fields = check_config_fields(cls, data)
        if isinstance(fields.get("objectives"), list):
            fields["objectives"] = tuple(fields["objectives"])
        if isinstance(fields.get("space"), Mapping):
            fields["space"] = SearchSpace.from_dict(fields["space"])
        budget = fields.get("recover_budget")
        if isinstance(budget, Mapping):
            if not set(budget) <= {"steps", "seconds"}:
                raise InputError(
                    f"StudyConfig: recover_budget {budget!r:.80} is not {{steps, seconds}}"
                )
            fields["recover_budget"] = Budget(**budget)
        if isinstance(fields.get("recover"), Mapping):
            fields["recover"] = TrainConfig.from_dict(fields["recover"])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> StudyConfig:
        """The config :meth:`to_json` wrote."""
        return cls.from_dict(config_json(cls, text))


def _measure_options(value: Any) -> dict[str, Any]:
    """``measure_options`` merged over the search loop's defaults, each option checked."""
    if value is None:
        return dict(DEFAULT_MEASURE)
    if not isinstance(value, Mapping):
        raise InputError(
            f"measure_options must be a dict of ns.measure options, got "
            f"{type(value).__name__}; e.g. measure_options={{'repeats': 30}}"
        )
    for key in value:
        if key not in MEASURE_KEYS:
            raise UnknownNameError(
                f"unknown measure option {key!r}; the search passes {', '.join(MEASURE_KEYS)} "
                f"to ns.measure, e.g. measure_options={{'repeats': 30}}"
            )
    options = {**DEFAULT_MEASURE, **dict(value)}
    from netsculpt.measurement._timing import check_counts, resolve_threads

    check_counts(warmup=options["warmup"], repeats=options["repeats"])
    if options.get("threads") is not None:
        resolve_threads(options["threads"])
    if not isinstance(options.get("memory", False), bool):
        raise InputError(
            f"measure_options['memory'] must be True or False, got {options['memory']!r}"
        )
    return options
