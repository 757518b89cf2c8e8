"""Argument checks of ``ns.search``: every problem is found before a study is opened.

Each check raises an :class:`~netsculpt.errors.InputError` subclass naming the argument,
the value and what to pass instead, so that a bad call never runs a trial (or creates a
study, or measures the dense model) before failing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from netsculpt._checks import check_finite_inputs, check_finite_weights, check_model
from netsculpt.errors import InputError, UnknownNameError
from netsculpt.studies.config import StudyConfig
from netsculpt.studies.predictor import Predictor
from netsculpt.studies.samplers import SAMPLERS

__all__ = ["check_registered_names", "check_search_arguments"]

#: longest study name Optuna's RDB storage keeps
MAX_STUDY_NAME = 512


def check_search_arguments(
    *,
    model: Any,
    example_inputs: Any,
    task: Any,
    config: Any,
    n_trials: Any,
    storage: Any,
    study_name: Any,
    sampler: Any,
    predictor: Any,
    progress: Any,
) -> tuple[dict[str, Any], BaseSampler | None, Predictor | None]:
    """Check every argument of ``ns.search``.

    Returns ``(overrides, sampler instance, predictor instance)``: the config fields the
    shortcut arguments replace (checked by building the config with them), and the runtime
    objects that cannot live in a config.
    """
    _check_model(model)
    if example_inputs is not None:
        check_finite_inputs(example_inputs)
    _check_task(task)
    _check_config(config)
    _check_storage(storage)
    _check_study_name(study_name)
    _check_sampler(sampler)
    if predictor is not None and not isinstance(predictor, (bool, Predictor)):
        raise InputError(
            f"predictor must be True, False or a netsculpt Predictor(...), got {predictor!r}"
        )
    if not isinstance(progress, bool):
        raise InputError(f"progress must be True or False, got {progress!r}")
    overrides: dict[str, Any] = {}
    if n_trials is not None:
        overrides["n_trials"] = n_trials
    if isinstance(sampler, str):
        overrides["sampler"] = sampler
    if predictor is not None:
        overrides["predictor"] = bool(predictor) if isinstance(predictor, bool) else True
    effective = dataclasses.replace(config or StudyConfig(), **overrides)  # checks them
    instance = sampler if isinstance(sampler, BaseSampler) else None
    check_registered_names(effective, sampler=instance, storage=storage)
    return overrides, instance, predictor if isinstance(predictor, Predictor) else None


def check_registered_names(config: StudyConfig, *, sampler: Any, storage: Any) -> None:
    """What a config cannot check alone: its importance criteria and latency backend are
    registered in this process, and its ``workers`` fit the sampler and storage given."""
    from netsculpt.measurement.backends import get_backend
    from netsculpt.pruning.importance import get_importance

    for criterion in config.space.importance:
        get_importance(criterion)  # UnknownNameError listing the registered criteria
    get_backend(config.backend)  # UnknownNameError listing the registered backends
    if config.workers > 1 and isinstance(sampler, BaseSampler):
        raise InputError(
            "a sampler instance cannot be shared by worker processes; pass its name "
            "(StudyConfig(sampler='nsga2'|'tpe'|'random')) with workers > 1"
        )
    if config.workers > 1 and isinstance(storage, BaseStorage):
        raise InputError(
            "workers > 1 need a storage the worker processes can reopen; pass a journal path "
            "or an RDB URL string instead of a storage object"
        )


def _check_config(config: Any) -> None:
    if config is None or isinstance(config, StudyConfig):
        return
    if isinstance(config, Mapping):
        raise InputError(
            f"config is a dict; build the config from it: "
            f"config=StudyConfig.from_dict({config!r:.80})"
        )
    if isinstance(config, type):
        raise InputError(
            f"config={config.__name__} is a class, not a config; pass an instance: "
            f"config=StudyConfig(...)"
        )
    raise InputError(
        f"config must be a netsculpt StudyConfig (or None), got {type(config).__name__} "
        f"({config!r:.60}); e.g. config=StudyConfig(n_trials=100, objectives=('score', "
        f"'latency_ms'))"
    )


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
    if sampler is None or isinstance(sampler, BaseSampler):
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
