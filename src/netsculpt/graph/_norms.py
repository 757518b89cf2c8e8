"""Norms over the residual width: which ones netsculpt can resize exactly.

A LayerNorm or RMSNorm over a hidden size divides by the number of channels, so removing
channels changes its statistics. Removed residual channels are zero in the verifier's
reference (the original with the removed units zeroed), so a norm that keeps dividing by
its *original* width over the channels it keeps computes exactly what the reference does:

* an RMS norm ``w * x / sqrt(mean(x^2) + eps)`` does so with its own code when ``eps`` is
  multiplied by ``D / d`` and ``w`` by ``sqrt(D / d)`` (``D`` channels before, ``d`` after);
* a LayerNorm is replaced by :class:`~netsculpt.pruning._residual.WidthLayerNorm`, which
  takes the mean and variance over the kept channels and the ``D - d`` zeros.

With residual-width pruning on (``ns.analyze(..., residual=True)``), the handlers of
:mod:`netsculpt.graph.ops.reduce` leave the normalised dimension of such a norm prunable
and record a :class:`NormSite`; after the walk, :func:`settle_norm_sites` checks each site
against the model and protects, with a reason, those netsculpt cannot resize.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from netsculpt.graph.ops._normsite import NormSite
from netsculpt.graph.ops._registry import short_name
from netsculpt.graph.spaces import Space

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__ = ["EPSILON_ATTRIBUTES", "NormSite", "norm_kind", "settle_norm_sites"]

#: where an RMS norm keeps its epsilon (transformers: ``variance_epsilon`` or ``eps``;
#: ``torch.nn.RMSNorm``: ``eps``, which may be None: the input dtype's machine epsilon)
EPSILON_ATTRIBUTES = ("variance_epsilon", "eps")

#: ops between an RMS norm's weight and the multiplication that applies it
_PASS_THROUGH = {"to", "_to_copy", "type_as", "clone", "alias", "contiguous"}
#: ops that read a weight only to check its dtype or shape (``weight.float()`` adds one)
_CHECKS_ONLY = {"_assert_tensor_metadata"}


def norm_kind(module: nn.Module) -> str | None:
    """``"layer_norm"``, ``"rms"`` or ``"width"`` (a ``WidthLayerNorm``) for a module
    netsculpt can resize; None otherwise."""
    if type(module) is nn.LayerNorm:
        return "layer_norm" if len(module.normalized_shape) == 1 else None
    if isinstance(module, nn.RMSNorm):
        return "rms" if len(module.normalized_shape) == 1 else None
    if type(module).__name__ == "WidthLayerNorm" and isinstance(module, nn.LayerNorm):
        return "width"  # resized once: it keeps dividing by its own original width
    eps = _epsilon(module)
    weight = getattr(module, "weight", None)
    if eps is None or not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        return None
    return "rms"


def _epsilon(module: nn.Module) -> str | None:
    for attr in EPSILON_ATTRIBUTES:
        value = vars(module).get(attr)
        if isinstance(value, float) and not isinstance(value, bool):
            return attr
    return None


def settle_norm_sites(model: nn.Module, p: Propagator) -> list[NormSite]:
    """Check every recorded site against ``model``; protect those netsculpt cannot resize.

    A site is resizable when its module is an ``nn.LayerNorm`` or ``nn.RMSNorm`` over one
    dimension, or an RMS norm of the form ``weight * x / sqrt(mean(x^2) + eps)`` (as the
    transformers Llama, Mistral and Qwen2 norms compute it) whose weight multiplies the
    result directly or as ``1 + weight`` (as in Gemma), and when the
    dimension it normalises is a whole hidden size, not the inside of attention heads.
    A norm that scales by ``1 + weight`` (Gemma) is resized too: its weight is rescaled so
    that ``1 + weight`` takes the factor.
    """
    inner = _inside_products(p)
    nodes = {n.name: n for n in p.program.graph.nodes}
    params = {v: k for k, v in p.param_nodes.items()}  # param name -> node name
    out: list[NormSite] = []
    for site in p.norm_sites:
        why = _why_not(model, site, inner, nodes, params, p)
        if why:
            site.reason = (
                f"normalised over by '{site.op}' in module '{site.module}', which netsculpt "
                f"cannot resize: {why}"
            )
            p.taint_desc([site.space], site.reason)
        out.append(site)
    return out


def _why_not(
    model: nn.Module,
    site: NormSite,
    inner: set[int],
    nodes: dict[str, fx.Node],
    params: dict[str, str],
    p: Propagator,
) -> str:
    try:
        module = model.get_submodule(site.module)
    except AttributeError:
        return "it is not a submodule of the model"
    kind = norm_kind(module)
    if kind is None or kind != site.kind:
        return (
            f"{type(module).__name__} is not nn.LayerNorm, nn.RMSNorm or an RMS norm "
            f"(weight or 1 + weight) * x / sqrt(mean(x^2) + eps) with its epsilon in "
            f"{' or '.join(EPSILON_ATTRIBUTES)}"
        )
    if p.table.find(site.space).uid in inner:
        site.in_heads = True
        return "it normalises inside attention heads (a head dimension keeps its size)"
    weight = getattr(module, "weight", None)
    weight_node = params.get(f"{site.module}.weight" if site.module else "weight")
    if isinstance(weight, torch.Tensor) and site.op == "mean":
        node = nodes.get(weight_node or "")
        if node is None or not _scales_directly(node):
            return "its weight does not multiply the normalised input, directly or as 1 + weight"
    elif site.weight_node and weight_node and site.weight_node != weight_node:
        return "it normalises with another module's weight"
    return ""


def _scales_directly(node: fx.Node, offset: bool = True) -> bool:
    """Every use of the weight ``node`` is a multiplication (through dtype casts), by the
    weight or, with ``offset``, by ``1 + weight`` (Gemma's norms)."""
    users = list(node.users)
    if not users:
        return False
    for user in users:
        name = short_name(user.target)
        if name in _CHECKS_ONLY:
            continue
        if name in _PASS_THROUGH:
            if not _scales_directly(user, offset):
                return False
        elif offset and name in ("add", "add_") and _plus_one(user, node):
            if not _scales_directly(user, offset=False):
                return False
        elif name not in ("mul", "mul_"):
            return False
    return True


def _plus_one(add: fx.Node, operand: fx.Node) -> bool:
    """``add`` computes ``operand + 1`` (either order, no ``alpha``)."""
    others = [a for a in add.args if a is not operand]
    if len(add.args) != 2 or len(others) != 1 or add.kwargs.get("alpha", 1) != 1:
        return False
    other = others[0]
    return isinstance(other, (int, float)) and not isinstance(other, bool) and other == 1


def _inside_products(p: Propagator) -> set[int]:
    """Uids of spaces that are factors of a product (heads and head dimensions)."""
    out: set[int] = set()
    seen: set[int] = set()
    stack: list[Any] = []
    for value in p.values.values():
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Space):
                    stack.append(item)
                elif isinstance(item, list):
                    stack.extend(s for s in item if isinstance(s, Space))
    while stack:
        space = p.table.find(stack.pop())
        if space.uid in seen:
            continue
        seen.add(space.uid)
        for child in space.children:
            c = p.table.find(child)
            if space.kind == "prod":
                out.add(c.uid)
            stack.append(c)
    return out
