"""Argument checks of the analyse / plan / prune entry points, on top of ``netsculpt._checks``.

Names a user selects layers by (``exclude=``, ``modules=``) must match something in the
model: a misspelt name would otherwise be ignored and the layer pruned anyway.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netsculpt._checks import check_finite_inputs, check_model, check_names
from netsculpt.errors import ExampleInputsError, InputError

__all__ = [
    "check_bool",
    "check_model_and_inputs",
    "check_selection",
    "check_weights",
    "match_names",
]


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """``value`` is ``True`` or ``False`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise InputError(
            f"{name} must be True or False, got {value!r} ({type(value).__name__})"
            + ("; None picks the default" if allow_none else "")
        )
    return value


def check_model_and_inputs(
    model: Any, example_inputs: Any, *, allow_meta: bool = False
) -> nn.Module:
    """A real module and finite example inputs; with ``allow_meta``, both may be all meta.

    A model whose every tensor is on the meta device, called with meta inputs, can still be
    analysed for its structure (no weights are read); any mix of meta and real is refused.
    """
    if allow_meta and isinstance(model, nn.Module) and _all_meta(model, example_inputs):
        return model
    module = check_model(model)
    check_finite_inputs(example_inputs)
    if example_inputs is None:
        raise ExampleInputsError(
            "example_inputs is None; pass what the model is called with: a tensor, a tuple "
            "of tensors, or a dict of keyword inputs (e.g. torch.randn(1, 3, 224, 224))"
        )
    return module


def check_weights(model: nn.Module, *, what: str = "model") -> None:
    """Parameters are finite and buffers hold no NaN.

    Like :func:`netsculpt._checks.check_finite_weights`, but an infinite *buffer* passes:
    attention masks are often buffers filled with ``-inf``.
    """
    tensors: list[tuple[str, torch.Tensor, bool]] = [
        (n, t, True) for n, t in model.named_parameters()
    ]
    tensors += [(n, t, False) for n, t in model.named_buffers()]
    for name, tensor, is_param in tensors:
        if not tensor.is_floating_point() or tensor.is_meta:
            continue
        if bool(torch.isnan(tensor).any()):
            bad = "NaN"
        elif is_param and not bool(torch.isfinite(tensor).all()):
            bad = "infinite"
        else:
            continue
        raise InputError(
            f"{what} has {bad} weights: {name!r} holds {bad} values; netsculpt cannot rank, "
            f"verify or export units of such a model: load a trained checkpoint, or find "
            f"where training diverged (a learning rate too high, float16 overflow)"
        )


def _all_meta(model: nn.Module, example_inputs: Any) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    leaves, _ = torch.utils._pytree.tree_flatten(example_inputs)
    inputs = [x for x in leaves if isinstance(x, torch.Tensor)]
    return bool(tensors) and bool(inputs) and all(t.is_meta for t in [*tensors, *inputs])


def match_names(patterns: Iterable[str], name: str) -> bool:
    """True when ``name`` equals a pattern, lies under it (``"layer1"``), or matches ``re:``."""
    for pat in patterns:
        if pat.startswith("re:"):
            if re.fullmatch(pat[3:], name):
                return True
        elif name == pat or name.startswith(pat + "."):
            return True
    return False


def check_selection(
    model: nn.Module, value: Any, name: str, *, extra: tuple[str, ...] = ()
) -> list[str]:
    """Module, parameter or group names (or ``"re:"`` patterns) that each match the model.

    A name matches a module or tensor of ``model`` when it equals it or lies above it
    (``"layer1"`` covers ``"layer1.0.conv1"``); a group name with a ``#2`` suffix matches
    through its base. ``extra`` lists further names that count (group names).
    """
    patterns = check_names(value, name)
    if not patterns:
        return patterns
    names = [n for n, _ in model.named_modules() if n]
    tensors = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    known = [*names, *tensors, *extra]
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise InputError(
                    f"{name} pattern {pattern!r} is not a valid regular expression ({exc}); "
                    f"write it as 're:' followed by a Python regex, e.g. 're:.*\\.attn'"
                ) from None
        base = pattern.split("#", 1)[0] if not pattern.startswith("re:") else pattern
        if pattern == "<top>" or any(match_names([base], n) for n in known):
            continue
        close = difflib.get_close_matches(pattern, known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"names look like {', '.join(repr(n) for n in names[:4]) or 'none'}"
        )
        raise InputError(
            f"{name} names {pattern!r}, which matches no module or parameter of "
            f"{type(model).__name__}; {hint} (an exact module name, a prefix such as "
            f"'layer1', or a 're:' pattern; print(model) or ns.analyze(...).summary() lists "
            f"them)"
        )
    return patterns
