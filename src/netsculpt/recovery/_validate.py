"""Entry checks of ``ns.finetune`` and ``ns.distill``: every argument before any training step.

Each check raises an :class:`~netsculpt.errors.InputError` subclass (a
:class:`~netsculpt.errors.TrainingError` for a task or optimiser that cannot train) whose
message names the argument, the value it got and what to pass instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from netsculpt._checks import (
    check_finite_weights,
    check_int,
    check_model,
    check_names,
    check_number,
)
from netsculpt.errors import InputError, InvalidRatioError, TrainingError, UnknownNameError
from netsculpt.recovery.budget import Budget
from netsculpt.recovery.callbacks import HOOKS
from netsculpt.tasks.base import Task, check_task

__all__ = [
    "OUTPUT_KINDS",
    "check_callbacks",
    "check_distill_options",
    "check_hidden_layers",
    "check_models",
    "check_optimizer",
    "check_train_options",
    "made_optimizer",
]

#: What ``ns.distill`` matches: ``output_kind`` is one of these.
OUTPUT_KINDS: tuple[str, ...] = ("auto", "logits", "embeddings")
#: Torch's seeds are unsigned 64-bit integers; netsculpt takes the non-negative int64 half.
_MAX_SEED = 2**63 - 1

T = TypeVar("T")


def _fix(label: str, check: Callable[[], T], fix: str = "") -> T:
    """Run a shared check; prefix its message with ``label`` and append ``fix``."""
    try:
        return check()
    except InputError as exc:
        message = str(exc)
        suffix = f"; {fix}" if fix and "e.g." not in message else ""
        raise type(exc)(f"{label}: {message}{suffix}") from None


def check_models(label: str, **models: Any) -> None:
    """Each model is an ``nn.Module`` with real, finite weights (said as NaN or infinite)."""
    for what, model in models.items():
        try:
            check_model(model, what=what)
            check_finite_weights(model, what=what)
        except InputError as exc:
            raise type(exc)(f"{label}: {exc}") from None


def check_train_options(
    label: str,
    *,
    task: Any,
    budget: Any,
    lr: Any,
    weight_decay: Any,
    batch_size: Any,
    seed: Any,
    early_stop_patience: Any,
    eval_every: Any,
    progress: Any,
) -> tuple[Task, Budget]:
    """The options :func:`finetune` and :func:`distill` share; returns the task and budget."""
    task = check_task(task, caller=label)
    try:
        limit = Budget.parse(budget)
    except InputError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    _fix(label, lambda: check_number(lr, "lr", strictly_positive=True), "try lr=1e-3")
    _fix(label, lambda: check_number(weight_decay, "weight_decay", minimum=0.0), "try 0.0 or 1e-2")
    _fix(label, lambda: check_int(batch_size, "batch_size", minimum=1), "try batch_size=64")
    _fix(label, lambda: check_int(seed, "seed"))
    if not 0 <= seed <= _MAX_SEED:
        raise InputError(
            f"{label}: seed={seed} is outside what torch takes (0 to 2**63 - 1); pass e.g. seed=0"
        )
    _fix(
        label,
        lambda: check_int(early_stop_patience, "early_stop_patience", minimum=1, allow_none=True),
        "try early_stop_patience=3, or None to train for the whole budget",
    )
    _fix(
        label,
        lambda: check_int(eval_every, "eval_every", minimum=1, allow_none=True),
        "try eval_every=50, or None",
    )
    if not isinstance(progress, bool):
        raise InputError(
            f"{label}: progress must be True or False, got {progress!r} ({type(progress).__name__})"
        )
    return task, limit


def check_distill_options(
    *, temperature: Any, alpha: Any, hidden_weight: Any, output_kind: Any
) -> None:
    """The options only :func:`distill` takes."""
    label = "distill"
    _fix(
        label,
        lambda: check_number(temperature, "temperature", strictly_positive=True),
        "try temperature=2.0",
    )
    _fix(label, lambda: check_number(alpha, "alpha"), "try alpha=0.5")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidRatioError(
            f"distill: alpha must be in [0, 1] (the weight of the teacher-matching loss), got "
            f"{alpha}; try alpha=0.5"
        )
    _fix(
        label,
        lambda: check_number(hidden_weight, "hidden_weight", minimum=0.0),
        "try hidden_weight=1.0, or 0.0 to match outputs only",
    )
    if not isinstance(output_kind, str) or output_kind not in OUTPUT_KINDS:
        raise UnknownNameError(
            f"distill: output_kind={output_kind!r} is not known; pass one of "
            f"{', '.join(repr(k) for k in OUTPUT_KINDS)}"
        )


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
    student: nn.Module, teacher: nn.Module, hidden_layers: Any, hidden_weight: float
) -> list[str] | None:
    """Module names present in both models, or ``None`` (match top-level children)."""
    if hidden_layers is None:
        return None
    names = _fix("distill", lambda: check_names(hidden_layers, "hidden_layers"), "or None")
    if not names:
        raise InputError(
            f"distill: hidden_layers={hidden_layers!r} names no layer; name the modules whose "
            f"outputs to match, e.g. hidden_layers=['layer1', 'layer2'], or None to match "
            f"top-level children"
        )
    if hidden_weight == 0:
        raise InputError(
            f"distill: hidden_layers={names!r} is set but hidden_weight=0.0, so no hidden-state "
            f"loss would be computed; pass hidden_weight=1.0 (or drop hidden_layers)"
        )
    for what, model in (("student", student), ("teacher", teacher)):
        known = [n for n, _ in model.named_modules() if n]
        for name in names:
            if name not in known:
                raise UnknownNameError(
                    f"distill: hidden_layers names {name!r}, which the {what} "
                    f"({type(model).__name__}) does not have; {_suggest(name, known)}"
                )
    return names


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
