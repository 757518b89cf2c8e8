"""Calling a model with example inputs given as a tensor, a tuple or a dict of keywords."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import nn

from netsculpt.errors import ExampleInputsError

ExampleInputs: TypeAlias = torch.Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]


def split_inputs(example_inputs: ExampleInputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``(args, kwargs)`` for ``model(*args, **kwargs)``."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ExampleInputsError(
        f"example_inputs must be a tensor, a tuple of tensors or a dict of keyword inputs, "
        f"got {type(example_inputs).__name__}; wrap a single tensor x as x, several as (x, y), "
        f"keywords as {{'input_ids': ids}}"
    )


def call_model(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    """Call ``model`` with ``example_inputs``; a failure becomes an :class:`ExampleInputsError`."""
    args, kwargs = split_inputs(example_inputs)
    try:
        return model(*args, **kwargs)
    except Exception as exc:  # the user's model raised: say so, keep the cause
        raise ExampleInputsError(
            f"the model {type(model).__name__} could not be called with the example inputs "
            f"({describe_inputs(example_inputs)}): {type(exc).__name__}: {exc}; pass inputs the "
            f"model accepts, e.g. the batch you would give it at inference"
        ) from exc


def run_hooked(model: nn.Module, hooks: Sequence[Any], batches: Sequence[ExampleInputs]) -> None:
    """Run ``model`` on each of ``batches`` without gradients, then remove ``hooks`` (the
    handles of hooks registered to watch the run), also when the model fails."""
    try:
        with torch.no_grad():
            for batch in batches:
                call_model(model, batch)
    finally:
        for h in hooks:
            h.remove()


def describe_inputs(example_inputs: ExampleInputs) -> str:
    """A short human description of the example inputs (shapes and dtypes)."""

    def one(x: Any) -> str:
        if isinstance(x, torch.Tensor):
            return f"tensor{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
        return type(x).__name__

    if isinstance(example_inputs, torch.Tensor):
        return one(example_inputs)
    if isinstance(example_inputs, Mapping):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in example_inputs.items()) + "}"
    if isinstance(example_inputs, (tuple, list)):
        return "(" + ", ".join(one(v) for v in example_inputs) + ")"
    return type(example_inputs).__name__


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """All tensors in a model's outputs (tensor, tuple, dict, ModelOutput), in order."""
    leaves, _ = torch.utils._pytree.tree_flatten(outputs)
    found = [x for x in leaves if isinstance(x, torch.Tensor)]
    if not found and hasattr(outputs, "to_tuple"):
        found = flatten_outputs(outputs.to_tuple())
    return found


def output_difference(
    model: nn.Module, other: nn.Module, example_inputs: ExampleInputs
) -> float | None:
    """The largest difference between the floating-point outputs of ``model`` and ``other``
    (a rewrite that should compute the same function) on ``example_inputs``, when any pair
    is not close (``rtol=1e-3``, ``atol=1e-4``); None when they all are. Both run in the
    mode they are in, without gradients."""
    with torch.no_grad():
        before = flatten_outputs(call_model(model, example_inputs))
        after = flatten_outputs(call_model(other, example_inputs))
    for a, b in zip(before, after, strict=True):
        if a.is_floating_point() and not torch.allclose(a, b, rtol=1e-3, atol=1e-4):
            return float((a.float() - b.float()).abs().max())
    return None


def inputs_to(example_inputs: ExampleInputs, device: torch.device | str) -> ExampleInputs:
    """Move every tensor in the example inputs to ``device``."""
    return torch.utils._pytree.tree_map(
        lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, example_inputs
    )


def without_cache(model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for tracing ``model``: ``use_cache=False`` added for a transformers model
    that would return its key/value cache (``config.use_cache``), unless the caller set it.

    torch.export cannot return a ``Cache`` object, and the cache is no output whose width
    must be kept: a pruned model's cache holds its own, fewer heads.
    """
    config = getattr(model, "config", None)
    if "use_cache" in kwargs or getattr(config, "use_cache", None) is not True:
        return kwargs
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return kwargs
    takes = "use_cache" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    return {**kwargs, "use_cache": False} if takes else kwargs
