"""Argument checks shared by the public entry points.

Each check raises an :class:`~netsculpt.errors.InputError` subclass whose message names the
argument, the value it got and what to pass instead, so that bad input never surfaces as a
traceback from deep inside torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from netsculpt.errors import ExampleInputsError, InputError

__all__ = [
    "check_finite_inputs",
    "check_finite_weights",
    "check_int",
    "check_model",
    "check_names",
    "check_number",
]


def check_model(model: Any, *, what: str = "model") -> nn.Module:
    """``model`` must be a ``torch.nn.Module`` whose weights live on a real device."""
    if not isinstance(model, nn.Module):
        raise InputError(
            f"{what} must be a torch.nn.Module, got {type(model).__name__} ({_short(model)}); "
            f"pass the model object itself (a built-in name or factory string works only on "
            f"the command line)"
        )
    for name, tensor in _tensors(model):
        if tensor.is_meta:
            raise InputError(
                f"{what} has weights on the meta device ({name!r}); netsculpt needs real "
                f"weights: load them first (for example model.to_empty(device='cpu') and a "
                f"state dict, or build the model without init_empty_weights)"
            )
    return model


def check_finite_weights(model: nn.Module, *, what: str = "model") -> None:
    """Every floating-point parameter and buffer of ``model`` is finite."""
    for name, tensor in _tensors(model):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise InputError(
                f"{what} has {bad} values in {name!r}; netsculpt cannot rank or verify units "
                f"of a model with non-finite weights: load a trained checkpoint, or find where "
                f"training diverged"
            )


def check_finite_inputs(example_inputs: Any, *, what: str = "example_inputs") -> None:
    """Floating-point tensors among ``example_inputs`` are finite and not on the meta device."""
    leaves, _ = torch.utils._pytree.tree_flatten(example_inputs)
    for i, x in enumerate(leaves):
        if not isinstance(x, torch.Tensor):
            continue
        if x.is_meta:
            raise ExampleInputsError(
                f"{what} holds a tensor on the meta device (leaf {i}, shape {tuple(x.shape)}); "
                f"pass real example data, e.g. torch.randn(...) of the shape the model takes"
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ExampleInputsError(
                f"{what} holds NaN or infinite values (leaf {i}, shape {tuple(x.shape)}); pass "
                f"finite example data"
            )


def check_int(
    value: Any, name: str, *, minimum: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` is an int (not a bool), at least ``minimum``; ``None`` when allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); "
            f"e.g. {name}={max(minimum or 0, 1)}"
        )
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    strictly_positive: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` is a finite real number (not a bool) within the given bounds."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if strictly_positive and value <= 0:
        raise InputError(f"{name} must be positive, got {value}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return float(value)


def check_names(value: Any, name: str) -> list[str]:
    """A list of strings from ``None``, one string or an iterable of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InputError(
            f"{name} must be a list of module or group names, got {value!r} "
            f"({type(value).__name__}); e.g. {name}=['encoder.layer.0.attention']"
        )
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise InputError(
                f"{name} must hold names (strings), got {item!r} ({type(item).__name__}) in it"
            )
    return items


def _tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: a config's JSON is a few kilobytes; anything far larger is not one
CONFIG_JSON_CHARS = 64 * 1024


def config_json(cls: type, text: Any) -> Any:
    """The decoded JSON ``text`` that ``cls.to_json()`` wrote, for ``cls.from_json``.

    Raises:
        InputError: ``text`` is not a str, is far longer than a config, or is not JSON.
    """
    if not isinstance(text, str) or len(text) > CONFIG_JSON_CHARS:
        raise InputError(
            f"{cls.__name__}.from_json needs the JSON text to_json() wrote, got "
            f"{type(text).__name__}"
            + (f" of {len(text):,} characters" if isinstance(text, str) else "")
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{cls.__name__}.from_json: not JSON ({exc})") from None


def check_config_fields(cls: type, data: Any) -> dict[str, Any]:
    """``data`` (a config read back from JSON, so data) as a dict of ``cls``'s fields:
    refuses anything but a mapping, and keys that name no field of the config dataclass
    ``cls``, suggesting the closest field name."""
    if not isinstance(data, Mapping):
        raise InputError(
            f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__} "
            f"({data!r:.60}); pass what {cls.__name__}.to_dict() returned"
        )
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError(
            f"{cls.__name__} has no field {', '.join(repr(k) for k in unknown)}; {hint}its "
            f"fields are {', '.join(names)}"
        )
    return dict(data)
