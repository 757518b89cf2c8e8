"""Slicing, selecting, indexing by tensors, and ops that depend on positions along a dim.

A slice of a whole range keeps its spaces; a slice of a part splits the space (a shape site
records the literal length); anything that picks positions by value or by literal index
protects the dimension it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import fx

from netsculpt.graph.ops._common import int_arg, list_arg, wrap_dim
from netsculpt.graph.ops._registry import handles, short_name
from netsculpt.graph.spaces import static_size

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__: list[str] = []


@handles("slice", "slice_copy", "narrow")
def _slice(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    name = short_name(node.target)
    dim = wrap_dim(int_arg(node.args[1]) if len(node.args) > 1 else 0, len(d))
    size = d[dim].size
    if name == "narrow":
        start, length = int_arg(node.args[2]), int_arg(node.args[3])
        end, step = start + length, 1
    else:
        start_arg = node.args[2] if len(node.args) > 2 else 0
        end_arg = node.args[3] if len(node.args) > 3 else None
        step = int_arg(node.args[4]) if len(node.args) > 4 else 1
        start = 0 if start_arg is None else int_arg(start_arg)
        end = size if end_arg is None else int_arg(end_arg)
    start = max(0, start + size if start < 0 else start)
    end = min(size, end + size if end < 0 else end)
    out = list(d)
    if start == 0 and end >= size and step == 1:
        return out
    if step != 1 or end <= start:
        reason = f"sliced with a step in module '{p.module_of(node)}'"
        p.taint_desc([d[dim]], reason)
        out[dim] = p.table.new(p.out_shape(node)[dim], reason)
        return out
    sizes = [x for x in (start, end - start, size - end)]
    keep = [x for x in sizes if x > 0]
    pieces = p.table.split_cat(d[dim], keep)
    if pieces is None:
        reason = f"sliced across differently laid-out channels in '{p.module_of(node)}'"
        p.taint_desc([d[dim]], reason)
        out[dim] = p.table.new(end - start, reason)
        return out
    out[dim] = pieces[1 if start > 0 else 0]
    prefix = pieces[0] if start > 0 else None
    p.record_shape_site(node, end - start, out[dim], (dim, start, end, prefix))
    return out


@handles("select", "select_copy")
def _select(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = wrap_dim(int_arg(node.args[1]), len(d))
    if d[dim].size > 1:
        p.release_next_factor(node, d[dim])
        p.taint_desc([d[dim]], f"indexed with a literal in module '{p.module_of(node)}'")
    return [s for i, s in enumerate(d) if i != dim]


@handles("index", "_unsafe_index", "index_select", "gather", "take_along_dim")
def _index(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    out_shape = p.out_shape(node)
    if d is None:
        return p.fresh_like(node, "")
    name = short_name(node.target)
    reason = f"indexed by a tensor in module '{p.module_of(node)}'"
    if name in ("index", "_unsafe_index"):
        indices = list_arg(node.args[1])
        last = max((i for i, x in enumerate(indices) if x is not None), default=-1)
        for i in range(last + 1):
            p.taint_desc([d[i]], reason)
        trailing = d[last + 1 :]
        out = p.fresh(out_shape, reason)
        if trailing and len(out) >= len(trailing):
            for k, s in enumerate(trailing):
                j = len(out) - len(trailing) + k
                if out[j].size == s.size:
                    out[j] = s
        return out
    dim = wrap_dim(int_arg(node.args[1]), len(d))
    p.taint_desc([d[dim]], reason)
    out = list(d)
    if len(out) == len(out_shape):
        out[dim] = p.table.new(out_shape[dim], reason)
        for i, s in enumerate(out):
            if s.size != out_shape[i]:
                out[i] = p.table.new(out_shape[i], reason)
        return out
    return p.fresh(out_shape, reason)


@handles(
    "tril",
    "triu",
    "flip",
    "roll",
    "cumsum",
    "cumprod",
    "sort",
    "topk",
    "argsort",
    "cummax",
    "cummin",
)
def _mixes_positions(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    name = short_name(node.target)
    reason = f"'{name}' in module '{p.module_of(node)}' depends on positions along it"
    dims: list[Any]
    if name in ("tril", "triu"):
        dims = [len(d) - 2, len(d) - 1]
    elif name in ("flip", "roll"):
        arg = node.args[1] if name == "flip" else (node.args[2] if len(node.args) > 2 else None)
        if arg is None:
            dims = list(range(len(d)))
        elif isinstance(arg, int):
            dims = [arg]
        else:
            dims = list_arg(arg)
    else:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
        if name == "topk":
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", -1)
        dims = [dim]
    dims = [wrap_dim(int_arg(x), len(d)) for x in dims]
    for i in dims:
        p.taint_desc([d[i]], reason)
    val = node.meta.get("val")
    val_shape = p.out_shape(node) if isinstance(val, torch.Tensor) else cast(Any, val)[0].shape
    out = [
        s if s.size == static_size(val_dim) else p.table.new(val_dim, reason)
        for s, val_dim in zip(d, val_shape, strict=False)
    ]
    if isinstance(val, (list, tuple)):
        return [out, list(out)]
    return out


@handles("index_add", "index_copy")
def _index_add(p: Propagator, node: fx.Node) -> Any:
    """``out = self; out.index_add_(dim, index, source)``: rows written at tensor positions.

    The scatter of a hand-written mixture of experts (``out.index_add(0, rows, expert(x[rows]))``):
    the indexed dimension is protected, every other dimension of ``source`` is the same
    channels as that of ``self`` (and of the result).
    """
    d, src = p.desc(node.args[0]), p.desc(node.args[3])
    if d is None or src is None or len(d) != len(src):
        raise ValueError("index_add of tensors with different ranks")
    dim = wrap_dim(int_arg(node.args[1]), len(d))
    reason = f"written at tensor positions in module '{p.module_of(node)}'"
    p.taint_desc([d[dim], src[dim]], reason)
    for i in range(len(d)):
        if i != dim:
            p.unify(d[i], src[i])
    return list(d)


@handles("index_put", "_unsafe_index_put")
def _index_put(p: Propagator, node: fx.Node) -> Any:
    """``self[indices] = values`` (or ``+=`` with ``accumulate``).

    The dimensions ``indices`` address are protected; the trailing dimensions of ``self``
    are the same channels as the trailing dimensions of ``values`` they are written from.
    """
    d, values = p.desc(node.args[0]), p.desc(node.args[2])
    if d is None:
        raise ValueError("index_put into an untracked tensor")
    indices = list_arg(node.args[1])
    reason = f"written at tensor positions in module '{p.module_of(node)}'"
    last = max((i for i, x in enumerate(indices) if x is not None), default=-1)
    for i in range(last + 1):
        p.taint_desc([d[i]], reason)
    trailing = d[last + 1 :]
    if values is not None:
        tail = values[len(values) - len(trailing) :] if trailing else []
        for s in values:
            if s not in tail:
                p.taint_desc([s], reason)
        for target, source in zip(reversed(trailing), reversed(tail), strict=False):
            if source.size == target.size:
                p.unify(target, source)
            elif source.size != 1:
                p.taint_desc([source, target], reason)
    return list(d)
