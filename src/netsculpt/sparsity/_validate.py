"""Entry checks of ``ns.sparsify``: every argument before the model is copied or trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from netsculpt._checks import check_finite_weights, check_int, check_model, check_number
from netsculpt.errors import InputError
from netsculpt.sparsity.config import _REGISTRY, SparsityConfig
from netsculpt.tasks.base import check_task

__all__ = ["check_sparsify_call"]

_LABEL = "sparsify"
_MAX_SEED = 2**63 - 1


def _methods() -> str:
    return ", ".join(f"{cls.__name__}(...)" for cls in _REGISTRY.values())


def check_config(config: Any) -> SparsityConfig:
    """``config`` is a sparsity config instance; a class, dict or name says what to pass."""
    if isinstance(config, SparsityConfig):
        return config
    if isinstance(config, type) and issubclass(config, SparsityConfig):
        raise InputError(
            f"{_LABEL}: config={config.__name__} is a class, not a config; pass an instance, "
            f"e.g. config={config.__name__}()"
        )
    if isinstance(config, Mapping):
        raise InputError(
            f"{_LABEL}: config is a {type(config).__name__} ({_short(config)}), not a sparsity "
            f"config; build one, e.g. MagnitudeConfig(sparsity=0.9), or from a dict with "
            f"netsculpt.sparsity.config_from_dict(d) (d needs 'kind')"
        )
    if isinstance(config, str):
        match = _REGISTRY.get(config.lower())
        hint = f"{match.__name__}()" if match is not None else _methods()
        raise InputError(
            f"{_LABEL}: config={config!r} is a name, not a config; pass a config value: {hint}"
        )
    raise InputError(
        f"{_LABEL}: config must be a sparsity config such as MagnitudeConfig(sparsity=0.9), got "
        f"{type(config).__name__} ({_short(config)}); see netsculpt.sparsity for the methods: "
        f"{_methods()}"
    )


def check_sparsify_call(
    model: Any, config: Any, *, task: Any, lr: Any, seed: Any, progress: Any
) -> tuple[nn.Module, SparsityConfig]:
    """Model, config, task, lr, seed and progress of a :func:`sparsify` call (not the budget)."""
    try:
        check_model(model)
        check_finite_weights(model)
        checked = check_config(config)
        if task is not None:
            check_task(task, caller=_LABEL)
        check_number(lr, "lr", strictly_positive=True)
        check_int(seed, "seed")
    except InputError as exc:
        raise type(exc)(_with_label(str(exc))) from None
    if not 0 <= seed <= _MAX_SEED:
        raise InputError(
            f"{_LABEL}: seed={seed} is outside what torch takes (0 to 2**63 - 1); pass e.g. seed=0"
        )
    if not isinstance(progress, bool):
        raise InputError(
            f"{_LABEL}: progress must be True or False, got {progress!r} "
            f"({type(progress).__name__})"
        )
    return model, checked


def _with_label(message: str) -> str:
    message = message if message.startswith(f"{_LABEL}:") else f"{_LABEL}: {message}"
    if message.startswith(f"{_LABEL}: lr "):
        return f"{message}; try lr=1e-3"
    return message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
