"""Layout ops: permutations, views and reshapes, expand, repeat, concatenation and splits.

A reshape maps input dimensions to output dimensions by factoring spaces
(:func:`reshape_desc`): viewing 256 channels as 4 heads of 64 splits the space into an
outer factor (the heads, prunable) and an inner one (protected). Literal sizes in views and
splits are recorded as shape sites, so that the planner can update the module attributes
they came from.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import fx

from netsculpt.graph.ops._common import Desc, int_arg, list_arg, wrap_dim
from netsculpt.graph.ops._registry import handles
from netsculpt.graph.spaces import Space, SpaceTable

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__ = ["INNER_FACTOR", "reshape_desc"]

INNER_FACTOR = "inner factor of a reshape (such as an attention head dimension)"


@handles("permute", "permute_copy")
def _permute(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dims = [wrap_dim(int_arg(x), len(d)) for x in list_arg(node.args[1])]
    return [d[i] for i in dims]


@handles("transpose", "transpose_copy", "swapaxes", "swapdims")
def _transpose(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    d = list(d)
    a, b = (wrap_dim(int_arg(x), len(d)) for x in node.args[1:3])
    d[a], d[b] = d[b], d[a]
    return d


@handles("t", "numpy_T")
def _t(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    return list(reversed(d))


@handles("unsqueeze", "unsqueeze_copy")
def _unsqueeze(p: Propagator, node: fx.Node) -> Any:
    d = list(p.desc(node.args[0]) or [])
    dim = wrap_dim(int_arg(node.args[1]), len(d) + 1)
    d.insert(dim, p.table.new(1))
    return d


@handles("squeeze", "squeeze_copy")
def _squeeze(p: Propagator, node: fx.Node) -> Any:
    d = list(p.desc(node.args[0]) or [])
    if len(node.args) > 1:
        arg = node.args[1]
        dims = [
            wrap_dim(int_arg(x), len(d)) for x in ([arg] if isinstance(arg, int) else list_arg(arg))
        ]
    else:
        dims = list(range(len(d)))
    return [s for i, s in enumerate(d) if not (i in dims and s.size == 1)]


@handles(
    "view",
    "_unsafe_view",
    "reshape",
    "view_copy",
    "flatten",
    "unflatten",
    "_reshape_alias",
    "view_as",
    "reshape_as",
)
def _reshape(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    out_shape = p.out_shape(node)
    if d is None:
        return p.fresh_like(node, "")
    result = reshape_desc(p.table, d, out_shape)
    if result is None:
        reason = f"a reshape in module '{p.module_of(node)}' that mixes channel dimensions"
        p.taint_desc(d, reason)
        return p.fresh(out_shape, reason)
    _record_literals(p, node, result)
    return result


def reshape_desc(table: SpaceTable, d: Desc, out_shape: Sequence[int]) -> Desc | None:
    """Map input dims to output dims through a reshape, refining spaces where needed."""
    queue: deque[Space] = deque()
    for s in d:
        if s.size != 1:
            queue.extend(table.leaves(s))
    out: Desc = []
    for size in out_shape:
        if size == 1:
            out.append(table.new(1))
            continue
        if size == 0:
            return None
        taken: list[Space] = []
        prod = 1
        while prod < size:
            if not queue:
                return None
            f = table.find(queue.popleft())
            if size % (prod * f.size) == 0:
                taken.append(f)
                prod *= f.size
                continue
            need = size // prod
            if size % prod or f.size % need or f.kind:
                return None
            table.split_prod(f, [need, f.size // need], inner_taint=INNER_FACTOR)
            outer, inner = table.find(f).children
            taken.append(outer)
            prod *= need
            queue.appendleft(inner)
        out.append(taken[0] if len(taken) == 1 else table.make_prod(taken))
    if queue:
        return None
    return out


def _record_literals(p: Propagator, node: fx.Node, result: Desc) -> None:
    """Remember literal sizes (not -1) of a view/reshape so that attributes can follow."""
    if len(node.args) < 2 or not isinstance(node.args[1], (list, tuple)):
        return
    sizes = list(node.args[1])
    if len(sizes) != len(result):
        return
    for lit, space in zip(sizes, result, strict=True):
        if isinstance(lit, int) and lit > 1:
            p.record_shape_site(node, int(lit), space)


@handles("expand", "expand_copy", "expand_as", "broadcast_to")
def _expand(p: Propagator, node: fx.Node) -> Any:
    d = list(p.desc(node.args[0]) or [])
    out_shape = p.out_shape(node)
    offset = len(out_shape) - len(d)
    out: Desc = []
    for j, size in enumerate(out_shape):
        i = j - offset
        if i >= 0 and d[i].size == size:
            out.append(d[i])
        else:
            out.append(p.table.new(size, "broadcast by expand to a literal size"))
    if node.args[1:] and isinstance(node.args[1], (list, tuple)):
        _record_literals(p, node, out)
    return out


@handles("repeat")
def _repeat(p: Propagator, node: fx.Node) -> Any:
    d = list(p.desc(node.args[0]) or [])
    reps = list_arg(node.args[1])
    offset = len(reps) - len(d)
    out: Desc = []
    for j, r in enumerate(reps):
        i = j - offset
        if i < 0:
            out.append(p.table.new(int(r), "repeated to a literal size"))
        elif r == 1:
            out.append(d[i])
        elif d[i].size == 1:
            out.append(p.table.new(int(r), "repeated to a literal size"))
        else:
            out.append(p.table.make_prod([p.table.new(int(r), "repeated"), d[i]]))
    return out


@handles("cat", "concat", "concatenate")
def _cat(p: Propagator, node: fx.Node) -> Any:
    tensors = [t for t in list_arg(node.args[0]) if p.desc(t)]
    out_shape = p.out_shape(node)
    dim = wrap_dim(int_arg(node.args[1]) if len(node.args) > 1 else 0, len(out_shape))
    descs = [x for x in (p.desc(t) for t in tensors) if x is not None and len(x) == len(out_shape)]
    if not descs:
        return p.fresh_like(node, "")
    if sum(x[dim].size for x in descs) != out_shape[dim]:
        reason = f"a concatenation in '{p.module_of(node)}' of tensors of different ranks"
        for t in tensors:
            p.taint_desc(p.desc(t), reason)
        return p.fresh(out_shape, reason)
    out: Desc = []
    for j in range(len(out_shape)):
        if j == dim:
            out.append(p.table.make_cat([x[j] for x in descs]))
            continue
        s = descs[0][j]
        for x in descs[1:]:
            if x[j].size == s.size and s.size != 1:
                s = p.unify(s, x[j])
        out.append(s)
    return out


@handles("stack")
def _stack(p: Propagator, node: fx.Node) -> Any:
    out_shape = p.out_shape(node)
    dim = wrap_dim(int_arg(node.args[1]) if len(node.args) > 1 else 0, len(out_shape))
    descs = [x for x in (p.desc(t) for t in list_arg(node.args[0])) if x is not None]
    if not descs:
        return p.fresh_like(node, "")
    base = list(descs[0])
    for x in descs[1:]:
        for i, s in enumerate(x):
            if s.size != 1:
                base[i] = p.unify(base[i], s)
    base.insert(dim, p.table.new(len(descs), "stacked"))
    return base


def _split_pieces(p: Propagator, node: fx.Node, d: Desc, dim: int, sizes: list[int]) -> Any:
    pieces = p.table.split_cat(d[dim], sizes)
    if pieces is None:
        reason = f"split in module '{p.module_of(node)}' across differently laid-out channels"
        p.taint_desc([d[dim]], reason)
        pieces = [p.table.new(s, reason) for s in sizes]
    for size, piece in zip(sizes, pieces, strict=True):
        if size > 1:
            p.record_shape_site(node, size, piece)
    outs = []
    for piece in pieces:
        x = list(d)
        x[dim] = piece
        outs.append(x)
    return outs


@handles(
    "split", "split_with_sizes", "split_copy", "split_with_sizes_copy", "chunk", "tensor_split"
)
def _split(p: Propagator, node: fx.Node) -> Any:
    """Every piece is a range of the split dimension; sizes come from the traced outputs."""
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = wrap_dim(
        int_arg(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)), len(d)
    )
    vals = node.meta.get("val")
    sizes = [int(v.shape[dim]) for v in list_arg(vals)]
    return _split_pieces(p, node, d, dim, sizes)


@handles("unbind", "unbind_copy")
def _unbind(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = wrap_dim(int_arg(node.args[1]) if len(node.args) > 1 else 0, len(d))
    p.release_next_factor(node, d[dim])
    p.taint_desc([d[dim]], f"unbound into separate tensors in module '{p.module_of(node)}'")
    return [[s for i, s in enumerate(d) if i != dim] for _ in range(d[dim].size)]
