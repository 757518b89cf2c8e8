"""Where a norm normalises over a dimension residual-width pruning may resize.

The handlers of :mod:`netsculpt.graph.ops.reduce` record a :class:`NormSite` instead of
protecting the dimension when an analysis prunes the residual width; the sites are checked
against the model after the walk (:func:`netsculpt.graph._norms.settle_norm_sites`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import fx

from netsculpt.graph.ops._registry import short_name
from netsculpt.graph.spaces import Space

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__ = ["NormSite", "in_width_layer_norm", "is_rms_mean", "record_norm_site"]


@dataclass
class NormSite:
    """A norm over one dimension that residual-width pruning may resize.

    ``kind`` is ``"layer_norm"`` or ``"rms"``; ``op`` the ATen operation that normalises
    (``layer_norm``, ``rms_norm``, or ``mean`` of ``x ** 2`` in an RMS norm's own code);
    ``reason`` is empty when netsculpt can resize the module, else why not; ``in_heads``:
    the norm normalises inside attention heads (Qwen3's and Gemma 3's ``q_norm`` /
    ``k_norm``), not over a hidden size, so it keeps its width and never decides whether
    the residual width can be pruned.
    """

    module: str
    kind: str
    op: str
    space: Space
    weight_node: str = ""
    reason: str = ""
    in_heads: bool = False


def record_norm_site(p: Propagator, node: fx.Node, space: Space, kind: str) -> None:
    """Remember that ``node`` (in an RMS or layer norm) normalises over ``space``."""
    weight = ""
    name = short_name(node.target)
    # layer_norm, native_layer_norm, rms_norm and _fused_rms_norm take the weight third
    if name != "mean" and len(node.args) > 2 and isinstance(node.args[2], fx.Node):
        weight = node.args[2].name
    p.norm_sites.append(NormSite(p.module_of(node), kind, name, space, weight))


def is_rms_mean(node: fx.Node, ndim: int, dims: list[int], keepdim: bool) -> bool:
    """Whether ``node`` is ``mean(x ** 2, -1, keepdim=True)``, as RMS norms compute it."""
    if short_name(node.target) != "mean" or dims != [ndim - 1] or not keepdim:
        return False
    source = node.args[0]
    if not isinstance(source, fx.Node) or short_name(source.target) != "pow":
        return False
    return len(source.args) > 1 and source.args[1] in (2, 2.0)


def in_width_layer_norm(node: fx.Node, ndim: int, dims: list[int]) -> bool:
    """Whether ``node`` sums over the last dimension inside a ``WidthLayerNorm`` (a layer
    norm that residual-width pruning already resized once, which computes its statistics
    with its own code)."""
    if short_name(node.target) != "sum" or dims != [ndim - 1]:
        return False
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return False
    kind = list(stack.values())[-1][1]
    name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", "")
    return str(name).endswith("netsculpt.pruning._residual.WidthLayerNorm") or name == (
        "WidthLayerNorm"
    )
