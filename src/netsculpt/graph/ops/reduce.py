"""Reductions (``mean``, ``sum``, ``amax``, ...), softmax and the normalisations.

A reduction over a channel dimension protects it: its result depends on how many channels
there are. Batch, group and layer norms couple their weights to the normalised channels.
When an analysis prunes the residual width (``ns.analyze(..., residual=True)``), a layer or
RMS norm over one hidden size records a site instead (:mod:`netsculpt.graph._norms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from netsculpt.graph.ops._common import Desc, int_arg, list_arg, wrap_dim
from netsculpt.graph.ops._normsite import in_width_layer_norm, is_rms_mean, record_norm_site
from netsculpt.graph.ops._registry import handles, short_name
from netsculpt.graph.ops.pointwise import elementwise

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__: list[str] = []


_TAINTING_REDUCTIONS = {
    "mean",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "amax",
    "amin",
    "max",
    "min",
    "argmax",
    "argmin",
    "logsumexp",
    "norm",
    "linalg_vector_norm",
    "prod",
    "any",
    "all",
    "median",
    "aminmax",
    "nanmean",
    "count_nonzero",
    # a sum over channels keeps the contribution of a removed channel that is not zero
    # after a non-linearity (sigmoid(0) = 0.5): removing it changes the result
    "sum",
    "nansum",
}


@handles(*_TAINTING_REDUCTIONS)
def _reduce(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    name = short_name(node.target)
    if d is None:
        return p.fresh_like(node, "")
    if len(node.args) > 1 and isinstance(node.args[1], fx.Node):
        return elementwise(p, node)  # max(a, b), min(a, b): elementwise
    ndim = len(d)
    dims_arg: Any = None
    keepdim = False
    keepdim_kwarg = bool(node.kwargs.get("keepdim", False))
    if name in ("norm", "linalg_vector_norm"):  # (x, ord, dim, keepdim)
        dims_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
        keepdim = bool(node.args[3]) if len(node.args) > 3 else keepdim_kwarg
    elif name in ("var", "std", "var_mean", "std_mean"):
        dims_arg = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = bool(node.kwargs.get("keepdim", node.args[3] if len(node.args) > 3 else False))
        if isinstance(dims_arg, bool):
            dims_arg = None
    else:
        dims_arg = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = bool(node.args[2]) if len(node.args) > 2 else keepdim_kwarg
    if dims_arg is None or (isinstance(dims_arg, (list, tuple)) and len(dims_arg) == 0):
        dims = list(range(ndim))
    elif isinstance(dims_arg, int):
        dims = [wrap_dim(dims_arg, ndim)]
    else:
        dims = [wrap_dim(int(x), ndim) for x in dims_arg]
    if p.residual and is_rms_mean(node, ndim, dims, keepdim) and d[-1].size > 1:
        # mean(x ** 2) in an RMS norm: residual-width pruning resizes the norm
        record_norm_site(p, node, d[-1], "rms")
    elif p.residual and in_width_layer_norm(node, ndim, dims) and d[-1].size > 1:
        record_norm_site(p, node, d[-1], "width")  # a layer norm resized before
    elif name in _TAINTING_REDUCTIONS:
        reason = f"'{name}' over it in module '{p.module_of(node)}' depends on the channel count"
        for i in dims:
            if d[i].size > 1:
                p.taint_desc([d[i]], reason)
    out: Desc = []
    for i, s in enumerate(d):
        if i in dims:
            if keepdim:
                out.append(p.table.new(1))
        else:
            out.append(s)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return [out, list(out)]
    shape = p.out_shape(node)
    if len(shape) != len(out):
        return p.fresh(shape, "reduced")
    return out


@handles("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax")
def _softmax(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = wrap_dim(int_arg(node.args[1]), len(d))
    if d[dim].size > 1:
        p.taint_desc([d[dim]], f"softmax over it in module '{p.module_of(node)}'")
    return list(d)


@handles("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm")
def _layer_norm(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    norm_shape = list_arg(node.args[1])
    n = len(norm_shape)
    tail = d[len(d) - n :]
    for a in node.args[2:4]:
        w = p.desc(a)
        if w is not None and len(w) == n:
            for x, y in zip(tail, w, strict=True):
                p.unify(x, y)
    name = short_name(node.target)
    if p.residual and n == 1 and tail[0].size > 1:
        # residual-width pruning resizes the norm (checked against the model after the walk)
        record_norm_site(p, node, tail[0], "rms" if "rms" in name else "layer_norm")
    else:
        p.taint_desc(
            tail,
            f"normalised over by '{name}' in module '{p.module_of(node)}' (its statistics "
            f"depend on every channel)",
        )
    out = list(d)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        stats = [s if i < len(d) - n else p.table.new(1) for i, s in enumerate(d)]
        return [out, stats, list(stats)][: len(val)]
    return out


@handles(
    "batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_batch_norm",
    "_native_batch_norm_legit_functional",
    "instance_norm",
    "cudnn_batch_norm",
    "_batch_norm_with_update",
    "_batch_norm_no_update",
)
def _batch_norm(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    c = d[1] if len(d) > 1 else d[0]
    for a in node.args[1:5]:
        w = p.desc(a)
        if w is not None and len(w) == 1:
            c = p.unify(c, w[0])
    if _batch_statistics(node):
        # statistics over every other dimension, computed from the input itself (a weight
        # standardised this way, as BiT's convolutions are): their sizes count
        reason = (
            f"statistics over it in a batch norm with batch statistics in module "
            f"'{p.module_of(node) or '<top>'}'"
        )
        for i, s in enumerate(d):
            if i != (1 if len(d) > 1 else 0) and s.size > 1:
                p.taint_desc([s], reason)
    val = node.meta.get("val")
    out = list(d)
    if isinstance(val, (list, tuple)):
        res: list[Any] = [out]
        for v in val[1:]:
            if isinstance(v, torch.Tensor) and v.ndim == 1 and v.shape[0] == c.size:
                res.append([c])
            else:
                res.append(
                    p.fresh(v.shape, "batch statistics") if isinstance(v, torch.Tensor) else None
                )
        return res
    return out


def _batch_statistics(node: fx.Node) -> bool:
    """Whether a batch-norm call normalises with statistics of its input (training mode,
    instance norm) rather than running statistics."""
    name = short_name(node.target)
    if name in ("_batch_norm_with_update", "instance_norm"):
        return True
    if name in ("_native_batch_norm_legit_no_training", "_batch_norm_no_update"):
        return False
    flags = [a for a in node.args[3:6] if isinstance(a, bool)]
    return bool(flags and flags[0])


@handles("group_norm", "native_group_norm")
def _group_norm(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    name = short_name(node.target)
    if name == "group_norm":
        groups = int_arg(node.args[1])
        weights = node.args[2:4]
    else:
        groups = int_arg(node.args[6])
        weights = node.args[1:3]
    c = d[1]
    per_group = c.size // groups
    g = p.table.new(groups)
    inner = p.table.new(per_group, f"channels inside one GroupNorm group in '{p.module_of(node)}'")
    p.unify(c, p.table.make_prod([g, inner]))
    for a in weights:
        w = p.desc(a)
        if w is not None:
            p.unify(c, w[0])
    if groups > 1:
        p.record_groups_site(p.module_of(node), "num_groups", g)
    val = node.meta.get("val")
    out = list(d)
    if isinstance(val, (list, tuple)):
        return [out] + [p.fresh(v.shape, "group statistics") for v in val[1:]]
    return out
