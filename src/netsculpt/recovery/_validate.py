"""Entry checks of ``ns.finetune`` and ``ns.distill``: every argument before any training step.

Each check raises an :class:`~netsculpt.errors.InputError` subclass (a
:class:`~netsculpt.errors.TrainingError` for a task or optimiser that cannot train) whose
message names the argument, the value it got and what to pass instead.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from netsculpt._checks import check_finite_weights, check_model
from netsculpt.errors import InputError, TrainingError, UnknownNameError
from netsculpt.recovery.budget import Budget
from netsculpt.recovery.callbacks import HOOKS
from netsculpt.recovery.config import DistillConfig, TrainConfig
from netsculpt.tasks.base import Task, check_task

__all__ = [
    "C",
    "check_callbacks",
    "check_config",
    "check_hidden_layers",
    "check_models",
    "check_optimizer",
    "check_train_call",
    "made_optimizer",
]

#: A kind of training config: what a call asked for is what its check returns.
C = TypeVar("C", bound=TrainConfig)


def check_models(label: str, **models: Any) -> None:
    """Each model is an ``nn.Module`` with real, finite weights (said as NaN or infinite)."""
    for what, model in models.items():
        try:
            check_model(model, what=what)
            check_finite_weights(model, what=what)
        except InputError as exc:
            raise type(exc)(f"{label}: {exc}") from None


def check_train_call(
    label: str,
    *,
    task: Any,
    budget: Any,
    config: Any,
    kind: type[C],
    progress: Any,
) -> tuple[Task, Budget, C]:
    """What :func:`finetune` and :func:`distill` share: the task, the budget, the config
    (``None`` for ``kind()``) and ``progress``; returns the task, budget and config."""
    task = check_task(task, caller=label)
    try:
        limit = Budget.parse(budget)
    except InputError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    config = check_config(label, config, kind)
    if not isinstance(progress, bool):
        raise InputError(
            f"{label}: progress must be True or False, got {progress!r} ({type(progress).__name__})"
        )
    return task, limit, config


def check_config(label: str, config: Any, kind: type[C]) -> C:
    """``config`` is a ``kind`` instance (``None`` gives the defaults); a dict, a class or
    the other kind of config is refused with the fix."""
    if config is None:
        return kind()
    wanted = kind.__name__
    if isinstance(config, type):
        raise InputError(
            f"{label}: config={config.__name__} is a class, not a config; pass an instance: "
            f"config={config.__name__}(...)"
        )
    if isinstance(config, Mapping):
        raise InputError(
            f"{label}: config is a dict; build the config from it: "
            f"config={wanted}.from_dict({_short(dict(config))})"
        )
    if isinstance(config, DistillConfig) and kind is not DistillConfig:
        raise InputError(
            f"{label}: config is a DistillConfig, whose temperature, alpha and hidden-state "
            f"options only ns.distill uses; call ns.distill(student, teacher, task, budget, "
            f"config), or pass a TrainConfig"
        )
    if not isinstance(config, kind):
        fields = ", ".join(f.name for f in dataclasses.fields(kind))
        hint = (
            f"DistillConfig(lr={config.lr!r}, ...) holds these options and the distillation ones"
            if isinstance(config, TrainConfig)
            else f"e.g. config={wanted}(lr=1e-3)"
        )
        raise InputError(
            f"{label}: config must be a {wanted} (fields {fields}), got "
            f"{type(config).__name__} ({_short(config)}); {hint}"
        )
    return config


def check_callbacks(label: str, callbacks: Any) -> tuple[Any, ...]:
    """A sequence of objects with at least one training hook (instances, not classes)."""
    if callbacks is None:
        return ()
    hook_list = ", ".join(HOOKS)
    if isinstance(callbacks, (str, bytes, Mapping, nn.Module)) or not isinstance(
        callbacks, Iterable
    ):
        if any(callable(getattr(callbacks, h, None)) for h in HOOKS):
            raise InputError(
                f"{label}: callbacks must be a list, got one {type(callbacks).__name__}; "
                f"wrap it: callbacks=[{type(callbacks).__name__}(...)]"
            )
        raise InputError(
            f"{label}: callbacks must be a list of callback objects, got "
            f"{type(callbacks).__name__} ({_short(callbacks)}); pass e.g. callbacks=[MyCallback()] "
            f"with a subclass of ns.Callback"
        )
    items = tuple(callbacks)
    for i, callback in enumerate(items):
        if isinstance(callback, type):
            raise InputError(
                f"{label}: callbacks[{i}] is the class {callback.__name__}, not an instance; "
                f"pass {callback.__name__}(...)"
            )
        hooks = [h for h in HOOKS if getattr(callback, h, None) is not None]
        if not hooks:
            raise InputError(
                f"{label}: callbacks[{i}] is {type(callback).__name__} ({_short(callback)}), "
                f"which has none of the hooks {hook_list}; subclass ns.Callback and override "
                f"the hooks you need"
            )
        for hook in hooks:
            if not callable(getattr(callback, hook)):
                raise InputError(
                    f"{label}: callbacks[{i}].{hook} is {type(getattr(callback, hook)).__name__}, "
                    f"not a method; define it as def {hook}(self, ...)"
                )
    return items


def check_optimizer(label: str, optimizer: Any) -> None:
    """``None`` or a factory ``params -> torch.optim.Optimizer`` (not a name, not an instance)."""
    example = "optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)"
    if optimizer is None:
        return
    if isinstance(optimizer, str):
        raise UnknownNameError(
            f"{label}: optimizer={optimizer!r} is a name, and netsculpt takes no optimiser "
            f"names; pass a factory, {example}, or leave optimizer=None for AdamW(lr, "
            f"weight_decay)"
        )
    if isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(
            f"{label}: optimizer is a {type(optimizer).__name__} already built on some "
            f"parameters; pass a factory that builds one on the parameters it is given, "
            f"{example}"
        )
    if not callable(optimizer):
        raise InputError(
            f"{label}: optimizer must be a factory params -> torch.optim.Optimizer, got "
            f"{type(optimizer).__name__} ({_short(optimizer)}); {example}"
        )


def made_optimizer(label: str, optimizer: Any) -> torch.optim.Optimizer:
    """What an optimiser factory returned, checked to be an optimiser."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TrainingError(
            f"{label}: the optimizer factory returned {type(optimizer).__name__} "
            f"({_short(optimizer)}), not a torch.optim.Optimizer; return one built on the "
            f"parameters it is given, e.g. lambda params: torch.optim.SGD(params, lr=0.1)"
        )
    return optimizer


def check_hidden_layers(
    student: nn.Module, teacher: nn.Module, names: Sequence[str] | None
) -> list[str] | None:
    """``DistillConfig.hidden_layers`` names modules both models have (close names listed
    otherwise); ``None`` stays ``None`` (match top-level children)."""
    if names is None:
        return None
    for what, model in (("student", student), ("teacher", teacher)):
        known = [n for n, _ in model.named_modules() if n]
        for name in names:
            if name not in known:
                raise UnknownNameError(
                    f"distill: hidden_layers names {name!r}, which the {what} "
                    f"({type(model).__name__}) does not have; {_suggest(name, known)}"
                )
    return list(names)


def _suggest(name: str, known: Sequence[str]) -> str:
    if not known:
        return "it has no submodules"
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
    listed = ", ".join(repr(k) for k in known[:8]) + (", ..." if len(known) > 8 else "")
    if close:
        return f"close names: {', '.join(repr(c) for c in close)} (all modules: {listed})"
    return f"its modules are: {listed}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
