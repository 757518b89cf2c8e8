"""Residual-width pruning: resizing the norms over a hidden size, exactly.

The residual stream of a transformer is one group: the embedding columns, every output
row of the layers that write into the stream (attention and MLP output projections), every
input column of the layers that read it, and the weights of every norm over it. Removing
a channel of the stream is exact in every layer but the norms, whose statistics divide by
the width. The verifier's reference is the original model with the removed channels set
to zero, so a norm that still divides by its original width ``D`` over the ``d`` channels
it keeps computes exactly the reference (:mod:`netsculpt.graph._norms`):

* RMS norms ``w * x / sqrt(mean(x^2) + eps)`` keep their class:
  ``mean_d(x^2) = (D / d) * mean_D(x^2)``, so ``eps' = eps * D / d`` and
  ``w' = w[kept] * sqrt(D / d)`` give ``w' * x / sqrt(mean_d(x^2) + eps') =
  w * x / sqrt(mean_D(x^2) + eps)``;
* ``nn.LayerNorm`` becomes :class:`WidthLayerNorm`: the mean and the variance are taken over
  the kept channels and the ``D - d`` zeros, which the original norm saw.

A plan records each resized norm as ``(module, D, d)`` (``Plan.norms``); the epsilon and the
weight scale follow from the module's own values when the plan is applied, so a plan holds
no floating-point value to trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from netsculpt.errors import PlanError, UnsupportedOperationError
from netsculpt.graph._norms import EPSILON_ATTRIBUTES, NormSite, norm_kind
from netsculpt.graph.analysis import Graph, Group
from netsculpt.pruning._moe_config import BASE_CONFIG_ATTR, base_config_values

__all__ = [
    "WidthLayerNorm",
    "check_norm",
    "require_residual",
    "residual_groups",
    "resize_norm",
    "scales_by_one_plus_weight",
    "sync_hidden_size",
]


class WidthLayerNorm(nn.LayerNorm):
    """A LayerNorm over the channels kept of a wider stream whose other channels are zero.

    ``width`` is the original width ``D``: the mean and the (biased) variance are those of
    the kept channels with ``D - d`` zeros beside them, as the unpruned ``nn.LayerNorm``
    computed them, so the pruned model equals the original with the removed channels
    zeroed. Its parameters are ``nn.LayerNorm``'s (``weight`` and ``bias`` over the kept
    channels), so its state dict has the same keys.
    """

    def __init__(
        self,
        kept: int,
        width: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(kept, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
        if not 1 <= kept <= width:
            raise PlanError(f"WidthLayerNorm needs 1 <= kept ({kept}) <= width ({width})")
        self.width = int(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        width = float(self.width)
        mean = h.sum(-1, keepdim=True) / width
        centred = h - mean
        zeros = width - h.shape[-1]  # the removed channels, zero in the wider stream
        var = (centred.pow(2).sum(-1, keepdim=True) + zeros * mean.pow(2)) / width
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, width={self.width}, eps={self.eps}"


def residual_groups(graph: Graph) -> list[Group]:
    """The groups a norm over a hidden size reaches (prunable or not), in graph order."""
    uids: set[int] = set()
    for site in _hidden_sites(graph):
        uids.update(graph.table.index_map(site.space))
    return [g for g in graph.groups if g.uid in uids]


def _hidden_sites(graph: Graph) -> list[NormSite]:
    """The norm sites over a hidden size (not inside attention heads)."""
    return [s for s in graph.norm_sites if not s.in_heads]


def require_residual(graph: Graph, exclude: Sequence[str] = ()) -> None:
    """With residual-width pruning asked for, at least one residual group must be prunable.

    Raises:
        UnsupportedOperationError: naming the norm (or other cause) that keeps the residual
            width whole, and the fix.
    """
    groups = residual_groups(graph)
    if any(g.prunable for g in groups):
        return
    sites = _hidden_sites(graph)
    if not sites:
        raise UnsupportedOperationError(
            f"PruneConfig(residual=True): model {graph.model_name} has no nn.LayerNorm or "
            f"RMS norm over a hidden size, so there is no residual width to prune; leave "
            f"residual=False (the default) for this model"
        )
    blocked = next((s for s in sites if s.reason), None)
    why = blocked.reason if blocked is not None else (groups[0].reason if groups else "")
    module = blocked.module if blocked is not None else (groups[0].module if groups else "?")
    fix = (
        "pass PruneConfig(protect_outputs=False) to let output widths change"
        if "model output" in why
        else f"leave residual=False (the default), or exclude=[{module!r}] and prune the "
        f"heads and MLP neurons only"
    )
    raise UnsupportedOperationError(
        f"PruneConfig(residual=True): the residual width of {graph.model_name} cannot be "
        f"pruned: {why or 'it is protected'}; netsculpt resizes nn.LayerNorm, nn.RMSNorm and "
        f"RMS norms (weight or 1 + weight) * x / sqrt(mean(x^2) + eps) exactly; {fix}"
    )


def _epsilon_attribute(module: nn.Module) -> str:
    for attr in EPSILON_ATTRIBUTES:
        if attr in vars(module):
            return attr
    return ""


def check_norm(path: str, module: Any, before: int, after: int) -> None:
    """Whether ``module`` can be resized from ``before`` to ``after`` channels.

    Raises:
        PlanError: it is not a norm netsculpt resizes, its width is not ``before``, or its
            epsilon is not a finite non-negative number (``None`` for ``nn.RMSNorm``).
    """
    kind: str | None = None
    if isinstance(module, WidthLayerNorm):
        kind = "width"
    else:
        kind = norm_kind(module) if isinstance(module, nn.Module) else None
    if kind is None:
        raise PlanError(
            f"the plan resizes the norm {path!r}, a {type(module).__name__}; plans resize only "
            f"nn.LayerNorm, nn.RMSNorm and RMS norms with an epsilon attribute"
        )
    width = _width(module)
    if width != before:
        raise PlanError(
            f"the plan resizes the norm {path!r} from {before} channels, but it has {width}; "
            f"apply a plan to an unpruned model of the architecture it was made for"
        )
    if not 1 <= after <= before:
        raise PlanError(
            f"the plan resizes the norm {path!r} to {after} channels; it must keep between 1 "
            f"and {before}"
        )
    attr = "eps" if kind in ("layer_norm", "width") else _epsilon_attribute(module)
    eps = getattr(module, attr, None)
    if eps is None and isinstance(module, nn.RMSNorm):
        return
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not math.isfinite(eps)
        or eps < 0
        or not math.isfinite(eps * before / after)
    ):
        raise PlanError(
            f"the norm {path!r} has epsilon {eps!r}; netsculpt resizes norms whose epsilon is "
            f"a finite non-negative number"
        )


def _width(module: nn.Module) -> int:
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and len(shape) == 1:
        return int(shape[0])
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else -1


def resize_norm(model: nn.Module, path: str, before: int, after: int) -> None:
    """Make the norm at ``path``, whose weights are already sliced to ``after`` channels,
    compute what it computed over ``before`` channels with the removed ones zero."""
    module = model.get_submodule(path)
    if isinstance(module, WidthLayerNorm) or after == before:
        return  # keeps dividing by its own original width
    if type(module) is nn.LayerNorm:
        parent_path, _, child = path.rpartition(".")
        weight, bias = module.weight, module.bias
        new = WidthLayerNorm(
            after,
            before,
            eps=module.eps,
            elementwise_affine=module.elementwise_affine,
            bias=bias is not None,
        )
        if weight is not None:
            new.weight = weight
        if bias is not None:
            new.bias = bias
        new.train(module.training)
        setattr(model.get_submodule(parent_path), child, new)
        return
    scale = before / after
    attr, eps = rms_epsilon(module)
    scale_weight = getattr(module, "weight", None)
    offset = scales_by_one_plus_weight(module)
    setattr(module, attr, eps * scale)
    if isinstance(scale_weight, torch.Tensor):
        with torch.no_grad():
            if offset:  # Gemma: 1 + weight takes the factor
                scale_weight.add_(1.0).mul_(math.sqrt(scale)).sub_(1.0)
            else:
                scale_weight.mul_(math.sqrt(scale))


def rms_epsilon(module: nn.Module) -> tuple[str, float]:
    """Where an RMS norm keeps its epsilon, and its value (``nn.RMSNorm(eps=None)``: the
    machine epsilon of its weight's dtype, as it computes)."""
    attr = "eps" if isinstance(module, nn.RMSNorm) else _epsilon_attribute(module)
    eps = getattr(module, attr)
    if eps is None:
        weight = getattr(module, "weight", None)
        eps = torch.finfo(weight.dtype if isinstance(weight, torch.Tensor) else torch.float32).eps
    return attr, float(eps)


def scales_by_one_plus_weight(module: nn.Module) -> bool:
    """Whether the RMS norm ``module`` computes ``(1 + weight) * x / rms(x)`` (Gemma's
    norms) rather than ``weight * x / rms(x)``: run once on a fixed input and compared with
    both. False for a norm without a weight."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    weight = weight.detach()
    eps = rms_epsilon(module)[1]
    x = torch.randn(2, weight.shape[0], generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = module(x.to(weight.dtype)).float()
    except Exception:  # noqa: BLE001 - a norm that needs more than its input: not Gemma's
        return False
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if out.shape != normed.shape:
        return False
    offset = torch.allclose(out, normed * (1 + weight.float()), rtol=1e-2, atol=1e-3)
    direct = torch.allclose(out, normed * weight.float(), rtol=1e-2, atol=1e-3)
    return offset and not direct


def sync_hidden_size(model: nn.Module, plan: Any) -> None:
    """Make the transformers config of ``model`` (pruned by ``plan``) give its new hidden
    size, under the config's own name for it (``n_embd`` for GPT-2), when the token
    embedding was as wide as the hidden size and the plan narrowed it; and
    ``rms_norm_eps`` when every RMS norm over the new width now has the same epsilon. The
    base values are kept on the model, so that :func:`netsculpt.save` writes the config the
    plan is replayed on.
    """
    config = getattr(model, "config", None)
    if not plan.norms or config is None or not hasattr(config, "to_dict"):
        return
    path = _embedding_path(model)
    shape = plan.shapes.get(f"{path}.weight" if path else "weight") if path is not None else None
    after = _embedding_width(model)
    if shape is None or len(shape) != 2 or after is None or after == shape[1]:
        return
    attribute_map = getattr(config, "attribute_map", None) or {}
    name = attribute_map.get("hidden_size", "hidden_size")
    if getattr(config, name, None) != shape[1]:
        return  # an embedding narrower than the hidden size (ALBERT): not the residual width
    updates: dict[str, Any] = {name: after}
    eps = {
        float(getattr(m, attr))
        for m in model.modules()
        if norm_kind(m) == "rms" and (attr := _epsilon_attribute(m)) and _width(m) == after
    }
    if len(eps) == 1 and isinstance(getattr(config, "rms_norm_eps", None), float):
        updates["rms_norm_eps"] = eps.pop()
    base = base_config_values(model)
    for key, value in updates.items():
        base.setdefault(key, getattr(config, key))
        setattr(config, key, value)
    setattr(model, BASE_CONFIG_ATTR, base)


def _embedding_path(model: nn.Module) -> str | None:
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embedding = getter() if callable(getter) else None
    except (AttributeError, NotImplementedError):
        return None
    for path, module in model.named_modules():
        if module is embedding:
            return path
    return None


def _embedding_width(model: nn.Module) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embedding = getter() if callable(getter) else None
    except (AttributeError, NotImplementedError):
        return None
    weight = getattr(embedding, "weight", None)
    if not isinstance(embedding, nn.Embedding) or not isinstance(weight, torch.Tensor):
        return None
    return int(weight.shape[1])
