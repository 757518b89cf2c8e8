"""Mixture-of-experts layers: grouped matrix multiplies over experts' stacked weights.

transformers (5.x) stores a layer's experts as 3-D parameters ``[num_experts, out, in]``
and runs them with a grouped matrix multiply: the tokens routed to each expert are sorted
into contiguous runs and ``offs`` marks where each expert's run ends. Under
``torch.export`` on CPU that is ``transformers::grouped_mm_fallback``; elsewhere
``aten::_grouped_mm`` (``torch.nn.functional.grouped_mm``).

Both compute ``out[s] = input[s] @ weight[e(s)]`` for ``input`` ``(S, in)`` and ``weight``
``(E, in, out)``: the input features follow the weight's ``in`` dimension and the output
features its ``out`` dimension, for every expert alike. So an expert layer's neurons form one
group across all its experts: the same positions are kept in every expert (a stacked tensor
cannot be ragged), scored over all of them. The expert dimension itself is protected here:
which expert a token reaches is decided by the router's top-k, so removing an expert is not
exact; :func:`netsculpt.prune_experts` does it as a separate, approximate step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx

from netsculpt.graph.ops._common import Desc, int_arg, list_arg, wrap_dim
from netsculpt.graph.ops._registry import handles, short_name

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__: list[str] = []

# ops a weight may pass through between its parameter and the grouped multiply
_SAME_LAYOUT = frozenset({"to", "_to_copy", "alias", "detach", "contiguous", "clone", "type_as"})


def _weight_source(p: Propagator, arg: Any, dim: int, hops: int = 8) -> tuple[Any, int] | None:
    """The parameter node behind ``arg`` and which of its dimensions ``dim`` of ``arg`` is,
    following transposes and dtype casts (None when ``arg`` is not a parameter's view)."""
    node = arg
    while hops > 0 and isinstance(node, fx.Node):
        hops -= 1
        if node.op == "placeholder":
            return (node, dim) if node.name in p.param_nodes else None
        if node.op != "call_function" or not node.args:
            return None
        name = short_name(node.target)
        src = node.args[0]
        rank = len(p.out_shape(node))
        if name in ("transpose", "swapaxes", "swapdims"):
            a, b = (wrap_dim(int_arg(x), rank) for x in node.args[1:3])
            dim = b if dim == a else a if dim == b else dim
        elif name == "t":
            dim = 1 - dim
        elif name == "permute":
            dim = wrap_dim(int_arg(list_arg(node.args[1])[dim]), rank)
        elif name not in _SAME_LAYOUT:
            return None
        node = src
    return None


def _grouped(p: Propagator, node: fx.Node, a: Desc, b: Desc) -> Desc:
    module = p.module_of(node) or "<top>"
    out_shape = p.out_shape(node)
    if len(a) == 2 and len(b) == 3:  # (S, in) x (E, in, out): tokens grouped by expert
        p.unify(a[1], b[1])
        p.table.taint(
            b[0],
            f"the expert dimension in '{module}' (tokens reach experts by top-k routing; "
            f"remove whole experts with netsculpt.prune_experts)",
        )
        offs = p.desc(node.args[2]) if len(node.args) > 2 else p.desc(node.kwargs.get("offs"))
        if offs is not None and len(offs) == 1 and offs[0].size == b[0].size:
            p.unify(b[0], offs[0])  # every multiply with these offsets runs the same experts
        source = _weight_source(p, node.args[1], 2)
        if source is not None:
            p.mark_output(*source)
        # grouped-matmul kernels need 16-byte aligned strides: keep whole multiples of that
        val = node.meta.get("val")
        itemsize = getattr(getattr(val, "dtype", None), "itemsize", 4) or 4
        for space in (a[1], b[2]):
            p.alignments.append((space, max(1, 16 // itemsize)))
        out = [a[0], b[2]]
    elif len(a) == 3 and len(b) == 3:  # (E, m, in) x (E, in, out): a batch per expert
        p.unify(a[0], b[0])
        p.unify(a[2], b[1])
        out = [a[0], a[1], b[2]]
    else:
        return p.unsupported(
            node,
            why=f"reaches a grouped matrix multiply of {len(a)}-D by {len(b)}-D operands in "
            f"module '{module}', which netsculpt cannot propagate channels through",
        )
    if tuple(s.size for s in out) != tuple(out_shape):
        return p.fresh(out_shape, "grouped matmul")
    return out


@handles("transformers::grouped_mm_fallback", "aten::_grouped_mm")
def _grouped_mm(p: Propagator, node: fx.Node) -> Any:
    a, b = p.desc(node.args[0]), p.desc(node.args[1])
    if a is None or b is None:
        return p.unsupported(node)
    bias = p.desc(node.args[3]) if len(node.args) > 3 else p.desc(node.kwargs.get("bias"))
    out = _grouped(p, node, a, b)
    if bias is not None and isinstance(out, list) and out and bias[-1].size == out[-1].size:
        p.unify(bias[-1], out[-1])
    return out


@handles("histc", "bincount")
def _histogram(p: Propagator, node: fx.Node) -> Any:
    # counts of values (tokens per expert): a new dimension, unrelated to the input's
    d = p.desc(node.args[0])
    if d is not None:
        p.taint_desc(d, f"histogram input in module '{p.module_of(node) or '<top>'}'")
    return p.fresh(p.out_shape(node), "bins of a histogram")
