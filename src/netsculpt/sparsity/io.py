"""Saving and loading sparse models: safetensors with the masks folded into the weights.

A sparse model is saved as a plain state dict; masked weights are stored as zeros, so loading
it into a fresh model of the same architecture gives back exactly the same (sparse) weights.
The per-layer sparsity is written into the file's metadata for inspection.
"""

from __future__ import annotations

import json
import os

from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from netsculpt.errors import SaveLoadError
from netsculpt.sparsity.masks import Masks, fold, weight_sparsity

__all__ = ["load_sparse", "read_sparsity", "save_sparse"]

_FORMAT = "netsculpt.sparse"


def save_sparse(
    model: nn.Module, path: str | os.PathLike[str], *, masks: Masks | None = None
) -> None:
    """Write ``model`` to a safetensors file with its masks folded in.

    Mask parametrisations are removed (``model`` is changed in place: it becomes a plain
    module with zeros in its weights) and ``masks``, when given, applied first.
    """
    fold(model)
    if masks is not None:
        masks.fold(model)
    layers = {k: round(v, 6) for k, v in weight_sparsity(model).items()}
    metadata = {"format": _FORMAT, "sparsity": json.dumps(layers)}
    save_model(model, os.fspath(path), metadata=metadata)


def load_sparse(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a file written by :func:`save_sparse` into ``model`` (same architecture), in place.

    Raises:
        SaveLoadError: the file is missing, was not written by :func:`save_sparse`, or does not
            fit ``model``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SaveLoadError(
            f"no sparse model file at {path!r}; pass the path that save_sparse wrote"
        )
    if read_metadata(path).get("format") != _FORMAT:
        raise SaveLoadError(
            f"{path!r} was not written by netsculpt.sparsity.save_sparse; load it with "
            f"safetensors.torch.load_file, or save the model again with save_sparse"
        )
    fold(model)
    missing, unexpected = load_model(model, path, strict=False)
    if missing or unexpected:
        raise SaveLoadError(
            f"{path!r} does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; load it into a model built like the saved one"
        )
    return model


def read_metadata(path: str) -> dict[str, str]:
    """The string metadata of a safetensors file."""
    with safe_open(path, framework="pt") as handle:
        return dict(handle.metadata() or {})


def read_sparsity(path: str | os.PathLike[str]) -> dict[str, float]:
    """The per-layer sparsity recorded in a file written by :func:`save_sparse`."""
    recorded = json.loads(read_metadata(os.fspath(path)).get("sparsity", "{}"))
    return {k: float(v) for k, v in recorded.items()}
