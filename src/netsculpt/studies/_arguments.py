"""Argument checks of ``ns.search``: every problem is found before a study is opened.

Each check raises an :class:`~netsculpt.errors.InputError` subclass naming the argument,
the value and what to pass instead, so that a bad call never runs a trial (or creates a
study, or measures the dense model) before failing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from netsculpt._checks import (
    check_finite_inputs,
    check_finite_weights,
    check_int,
    check_model,
    check_number,
)
from netsculpt.errors import InputError, UnknownNameError
from netsculpt.studies.objective import DEFAULT_MEASURE, check_objectives
from netsculpt.studies.predictor import Predictor
from netsculpt.studies.samplers import SAMPLERS, check_constraints
from netsculpt.studies.space import SearchSpace

__all__ = ["check_search_arguments"]

#: options of ``ns.measure`` that the search loop passes through
MEASURE_KEYS = ("warmup", "repeats", "threads", "memory")
#: longest study name Optuna's RDB storage keeps
MAX_STUDY_NAME = 512
#: more worker processes than any machine runs usefully: a typo
MAX_WORKERS = 1024


def check_search_arguments(
    *,
    model: Any,
    example_inputs: Any,
    task: Any,
    n_trials: Any,
    objectives: Any,
    storage: Any,
    study_name: Any,
    sampler: Any,
    workers: Any,
    space: Any,
    constraints: Any,
    predictor: Any,
    backend: Any,
    seed: Any,
    recover_budget: Any,
    timeout: Any,
    progress: Any,
    measure_options: Any,
) -> tuple[tuple[str, ...], SearchSpace, dict[str, float], Predictor | None, dict[str, Any]]:
    """Check every argument of ``ns.search``.

    Returns ``(objectives, space, constraints, predictor, measure options)`` normalised.
    """
    _check_model(model)
    if example_inputs is not None:
        check_finite_inputs(example_inputs)
    _check_task(task)
    check_int(n_trials, "n_trials", minimum=1)
    objectives = check_objectives(objectives)
    _check_storage(storage)
    _check_study_name(study_name)
    _check_sampler(sampler)
    check_int(workers, "workers", minimum=1)
    if workers > MAX_WORKERS:
        raise InputError(f"workers={workers} is more processes than any machine runs; use e.g. 4")
    space = space if space is not None else SearchSpace()
    if not isinstance(space, SearchSpace):
        raise InputError(
            f"space must be a netsculpt SearchSpace, got {type(space).__name__}; e.g. "
            f"space=SearchSpace(tie='stage', min_keep=0.3)"
        )
    from netsculpt.pruning.importance import get_importance

    for criterion in space.importance:
        get_importance(criterion)  # UnknownNameError listing the registered criteria
    limits = check_constraints(constraints)
    screening = check_predictor(predictor)
    _check_backend(backend)
    check_int(seed, "seed", minimum=0, allow_none=True)
    if recover_budget is not None:
        from netsculpt.recovery.budget import Budget

        Budget.parse(recover_budget)  # InputError naming the budget and the fix
    check_number(timeout, "timeout", strictly_positive=True, allow_none=True)
    if not isinstance(progress, bool):
        raise InputError(f"progress must be True or False, got {progress!r}")
    options = check_measure_options(measure_options)
    if workers > 1 and isinstance(sampler, BaseSampler):
        raise InputError(
            "a sampler instance cannot be shared by worker processes; pass its name "
            "(sampler='nsga2'|'tpe'|'random') with workers > 1"
        )
    if workers > 1 and isinstance(storage, BaseStorage):
        raise InputError(
            "workers > 1 need a storage the worker processes can reopen; pass a journal path "
            "or an RDB URL string instead of a storage object"
        )
    return objectives, space, limits, screening, options


def check_predictor(value: Any) -> Predictor | None:
    """``predictor=`` as a :class:`Predictor` or None."""
    if value is None or value is False:
        return None
    if value is True:
        return Predictor()
    if isinstance(value, Predictor):
        return value
    raise InputError(f"predictor must be True, False or a netsculpt Predictor(...), got {value!r}")


def check_measure_options(value: Any) -> dict[str, Any]:
    """``measure_options=`` merged over the search loop's defaults, each option checked."""
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


def _check_model(model: Any) -> None:
    if isinstance(model, str):
        if not model.strip():
            raise InputError(
                "model='' is empty; pass the model object, a built-in name (digits, minilm) "
                "or a 'package.module:factory' string"
            )
        return
    if model is None:
        raise InputError(
            "model is None; pass the trained torch.nn.Module to search (or a built-in name "
            "such as 'digits', or a 'package.module:factory' string)"
        )
    check_model(model)
    check_finite_weights(model)


def _check_task(task: Any) -> None:
    if task is None:
        raise InputError(
            "ns.search needs task=: an ns.Task that scores a model (higher is better), or a "
            "registered task name; e.g. task=ns.get_task('digits') or task='digits'"
        )
    if isinstance(task, str):
        if not task.strip():
            raise InputError("task='' is empty; pass an ns.Task or a registered task name")
        return
    if not callable(getattr(task, "evaluate", None)):
        raise InputError(
            f"task must be an ns.Task (an object with evaluate(model) -> float) or a task "
            f"name, got {type(task).__name__}; e.g. task=ns.get_task('digits')"
        )


def _check_storage(storage: Any) -> None:
    if storage is None or isinstance(storage, BaseStorage):
        return
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if not isinstance(storage, str):
        raise InputError(
            f"storage must be None, a URL or path string, or an optuna storage, got "
            f"{type(storage).__name__} ({storage!r:.60}); e.g. storage='sqlite:///netsculpt.db'"
        )
    if not storage.strip():
        raise InputError(
            "storage='' is empty; pass None for sqlite:///netsculpt.db, a URL such as "
            "'sqlite:///search.db', or a journal file path"
        )


def _check_study_name(study_name: Any) -> None:
    if study_name is None:
        return
    if not isinstance(study_name, str) or not study_name.strip():
        raise InputError(
            f"study_name must be a non-empty string or None (a name derived from the model), "
            f"got {study_name!r}"
        )
    if len(study_name) > MAX_STUDY_NAME:
        raise InputError(
            f"study_name is {len(study_name)} characters long; storages keep at most "
            f"{MAX_STUDY_NAME}: pass a shorter name"
        )


def _check_sampler(sampler: Any) -> None:
    if isinstance(sampler, BaseSampler):
        return
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise UnknownNameError(
                f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)} or pass an "
                f"optuna.samplers.BaseSampler instance"
            )
        return
    raise InputError(
        f"sampler must be a name ({', '.join(SAMPLERS)}) or an optuna.samplers.BaseSampler, "
        f"got {type(sampler).__name__}"
    )


def _check_backend(backend: Any) -> None:
    if not isinstance(backend, str):
        raise InputError(
            f"backend must be a latency backend name such as 'torch' or 'onnxruntime', got "
            f"{backend!r}"
        )
    from netsculpt.measurement.backends import get_backend

    get_backend(backend)  # UnknownNameError listing the registered backends
