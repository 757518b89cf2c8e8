"""``ns.rotate_residual``: rotate a transformer's residual stream onto its principal axes
(SliceGPT), so that residual-width pruning removes the directions that carry least.

A pre-norm transformer with RMS norms computes the same function when its residual stream
is rotated by any orthogonal ``Q``: the RMS of a vector does not change under rotation, so
once each norm's per-channel scale is folded into the layers that read its output, every
tensor that writes to the stream (embeddings, attention and MLP output projections) is
multiplied by ``Q`` along its residual dimension and every tensor that reads it (the
projections after each norm, the LM head) the same way, and the outputs are unchanged
(Ashkboos et al., 2024). With ``Q`` the eigenvectors of the stream's covariance on
calibration batches, sorted by eigenvalue, the first channels of the rotated stream carry
most of its energy and the last ones least; :func:`netsculpt.prune` with
``PruneConfig(residual=True)`` and activation importance then removes those last ones, and
its verifier proves the pruned model equals the rotated one with them zeroed::

    rotated = ns.rotate_residual(model, example_inputs, calib=batches)
    small = ns.prune(rotated, example_inputs,
                     ns.PruneConfig(ratio=0.3, residual=True, importance="activation"),
                     calib=batches)

The rotation changes weights, not shapes: the rotated model has the architecture (and the
plan, if it was pruned before) of the model it came from, and saves and reloads like it.
One ``Q`` is used for the whole stream (SliceGPT rotates each block's stream separately,
which needs extra projections on the skip connections).

What it needs: one residual stream, normalised only by RMS norms (``weight * x / rms`` or
``(1 + weight) * x / rms``) whose outputs are read only by ``nn.Linear`` layers; LayerNorm
subtracts a mean, which a rotation does not preserve. Anything else is refused with the
module to blame, and the rotated model is checked against the original before it is
returned.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from netsculpt._checks import check_model
from netsculpt._inputs import ExampleInputs, output_difference, run_hooked
from netsculpt.errors import InputError, UnsupportedOperationError
from netsculpt.graph._norms import norm_kind
from netsculpt.graph.analysis import Graph, analyze
from netsculpt.pruning._residual import residual_groups, scales_by_one_plus_weight
from netsculpt.pruning.apply import _aliases
from netsculpt.pruning.importance import check_calib

__all__ = ["rotate_residual"]


def rotate_residual(
    model: nn.Module, example_inputs: ExampleInputs, calib: Sequence[ExampleInputs]
) -> nn.Module:
    """A copy of ``model`` whose residual stream is rotated onto its principal axes.

    See :mod:`netsculpt.pruning.rotate`. ``model`` is not modified.

    Args:
        model: a transformer whose residual stream is normalised by RMS norms.
        example_inputs: inputs to analyse the model with and to check the rotation on.
        calib: calibration batches (a list of model inputs) for the stream's covariance.

    Raises:
        UnsupportedOperationError: no residual stream, more than one, a norm that is not an
            RMS norm, a norm read by something other than ``nn.Linear``, a folded scale on a
            weight tied to another module, or outputs that changed; names the module.
        InputError: bad calibration batches.
    """
    check_model(model)
    if calib is None:
        raise InputError(
            "rotate_residual needs calibration batches to measure the residual stream: pass "
            "calib=[batch, ...], each batch shaped like example_inputs"
        )
    batches = check_calib(calib, "activation")
    graph = analyze(model, example_inputs, residual=True)
    groups = residual_groups(graph)
    if len(groups) != 1 or not groups[0].prunable:
        why = (
            f"{len(groups)} residual streams"
            if len(groups) != 1
            else f"its residual width is protected ({groups[0].reason})"
        )
        raise UnsupportedOperationError(
            f"rotate_residual needs one residual stream that can change width; "
            f"{graph.model_name} has {why}; pruning the residual width "
            f"(PruneConfig(residual=True)) must work on the model first"
        )
    group = groups[0]
    _rms_norms(model, graph)  # refuse before copying anything
    rotated = copy.deepcopy(model).eval()
    norms = _rms_norms(rotated, graph)
    readers = _norm_readers(rotated, norms, example_inputs)
    _fold_scales(rotated, norms, readers)
    q = _principal_axes(rotated, norms, batches, group.size)
    norm_weights = {f"{path}.weight" for path in norms}
    params = dict(rotated.named_parameters(remove_duplicate=False))
    done: set[int] = set()
    with torch.no_grad():
        for slot in group.slots:
            if slot.tensor in norm_weights:
                continue
            t = params.get(slot.tensor)
            if t is None or slot.is_buffer:
                raise UnsupportedOperationError(
                    f"the residual stream of {graph.model_name} reaches the buffer "
                    f"{slot.tensor!r}, which rotate_residual cannot rotate"
                )
            _leaf, positions = graph.index_map(slot.tensor, slot.dim)[group.uid]
            if positions.tolist() != list(range(group.size)):
                raise UnsupportedOperationError(
                    f"{slot.tensor!r} holds the residual channels of {graph.model_name} in "
                    f"another order or only in part; rotate_residual needs each tensor to hold "
                    f"the whole stream"
                )
            if id(t) in done:  # a weight tied to another reader or writer: rotated once
                continue
            done.add(id(t))
            moved = t.detach().double().movedim(slot.dim, -1) @ q
            t.copy_(moved.movedim(-1, slot.dim).to(t.dtype))
    _check_same_function(model, rotated, example_inputs, graph.model_name)
    return rotated.train(model.training)  # in the mode the model was in


def _rms_norms(model: nn.Module, graph: Graph) -> dict[str, nn.Module]:
    """The norms over the residual stream; each must be an RMS norm netsculpt resizes."""
    out: dict[str, nn.Module] = {}
    for site in graph.norm_sites:
        if site.in_heads or site.module in out:
            continue
        module = model.get_submodule(site.module)
        if site.reason or norm_kind(module) != "rms":
            raise UnsupportedOperationError(
                f"rotate_residual needs RMS norms over the residual stream; {site.module!r} "
                f"({type(module).__name__}) is not one"
                + (f" ({site.reason})" if site.reason else "")
                + "; a LayerNorm subtracts a mean, which a rotation does not preserve"
            )
        out[site.module] = module
    if not out:
        raise UnsupportedOperationError(
            f"{graph.model_name} has no RMS norm over its residual stream to rotate around"
        )
    return out


def _norm_readers(
    model: nn.Module, norms: Mapping[str, nn.Module], example_inputs: ExampleInputs
) -> dict[str, list[str]]:
    """Norm -> the ``nn.Linear`` layers that read its output (matched by storage, so that a
    slice of the output, as an LM head takes one, counts). Only outputs still alive count:
    once a norm's output is freed, its memory may hold another layer's input."""
    written: dict[int, tuple[str, weakref.ref[torch.Tensor]]] = {}
    read: dict[str, list[str]] = {path: [] for path in norms}
    hooks = []

    def norm_hook(path: str) -> Any:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                written[out.untyped_storage().data_ptr()] = (path, weakref.ref(out))

        return hook

    def linear_hook(path: str) -> Any:
        def hook(_m: nn.Module, args: Any) -> None:
            x = args[0] if args else None
            entry = written.get(x.untyped_storage().data_ptr()) if torch.is_tensor(x) else None
            if entry is None or entry[1]() is None:
                return
            if path not in read[entry[0]]:
                read[entry[0]].append(path)

        return hook

    for path, module in norms.items():
        hooks.append(module.register_forward_hook(norm_hook(path)))
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_pre_hook(linear_hook(path)))
    run_hooked(model, hooks, [example_inputs])
    return read


def _fold_scales(
    model: nn.Module, norms: Mapping[str, nn.Module], readers: Mapping[str, list[str]]
) -> None:
    """Move each norm's per-channel scale into the layers that read it; the norm keeps a
    scale of one (a weight of one, or of zero for a ``1 + weight`` norm)."""
    places = _aliases(model, buffers=False)
    with torch.no_grad():
        for path, norm in norms.items():
            weight = getattr(norm, "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue  # no scale to fold
            offset = scales_by_one_plus_weight(norm)
            scale = (weight.detach().double() + 1.0) if offset else weight.detach().double()
            if bool((scale == 1.0).all()):
                continue
            if not readers[path]:
                raise UnsupportedOperationError(
                    f"the output of the norm {path!r} is not read by an nn.Linear layer, so "
                    f"rotate_residual cannot fold its scale anywhere"
                )
            for reader in readers[path]:
                linear = cast(nn.Linear, model.get_submodule(reader))
                if len(places[f"{reader}.weight"]) > 1:
                    raise UnsupportedOperationError(
                        f"the norm {path!r} scales what {reader!r} reads, whose weight is tied "
                        f"to another module (tied embeddings); folding the scale would untie "
                        f"them, so rotate_residual refuses this model"
                    )
                linear.weight.copy_((linear.weight.double() * scale).to(linear.weight.dtype))
            weight.fill_(0.0 if offset else 1.0)


def _principal_axes(
    model: nn.Module, norms: Mapping[str, nn.Module], batches: Sequence[ExampleInputs], width: int
) -> torch.Tensor:
    """The eigenvectors of the residual stream's second moment (over every token each norm
    sees on ``batches``), as columns in order of decreasing eigenvalue; float64."""
    moment = torch.zeros(width, width, dtype=torch.float64)

    def hook(_m: nn.Module, args: Any) -> None:
        x = args[0].detach().double().reshape(-1, width)
        moment.add_(x.T @ x)

    run_hooked(model, [n.register_forward_pre_hook(hook) for n in norms.values()], batches)
    values, vectors = torch.linalg.eigh(moment)
    return vectors[:, torch.argsort(values, descending=True)]


def _check_same_function(
    model: nn.Module, rotated: nn.Module, example_inputs: ExampleInputs, name: str
) -> None:
    was_training = model.training
    try:
        diff = output_difference(model.eval(), rotated, example_inputs)
    finally:
        model.train(was_training)
    if diff is not None:
        raise UnsupportedOperationError(
            f"rotating the residual stream of {name} changed its outputs (max difference "
            f"{diff:.3g}): something reads the stream other than through RMS norms and "
            f"nn.Linear layers; prune its residual width without rotate_residual"
        )
