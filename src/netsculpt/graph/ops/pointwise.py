"""Elementwise, identity and creation ops, and the items of multi-output ops.

An elementwise op (``add``, ``relu``, ``where``, ...) lines up its inputs' dimensions with
its output's, by broadcasting from the right: equal-sized dimensions share their indices.
Ops that return their input (``clone``, ``dropout``, ``to``) pass its spaces through; ops
that create a tensor of a literal size (``zeros``, ``arange``) give it fresh spaces.
Every ATen op tagged ``pointwise`` without a handler of its own is handled by
:func:`elementwise` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import fx

from netsculpt.graph.ops._common import int_arg, wrap_dim
from netsculpt.graph.ops._registry import handles
from netsculpt.graph.spaces import Space

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__ = ["elementwise"]


@handles(
    "add",
    "sub",
    "mul",
    "div",
    "where",
    "masked_fill",
    "clamp",
    "clamp_min",
    "clamp_max",
    "pow",
    "neg",
    "relu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "erf",
    "softplus",
    "mish",
    "relu6",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "minimum",
    "maximum",
    "lerp",
    "addcmul",
    "addcdiv",
    "sign",
    "floor",
    "ceil",
    "round",
    "reciprocal",
    "square",
    "sin",
    "cos",
    "logical_not",
    "logical_and",
    "logical_or",
    "bitwise_not",
    "bitwise_and",
    "bitwise_or",
    "__and__",
    "__or__",
    "__xor__",
    "prelu",
    "rsub",
    "fill",
    "glu_backward",
    "sgn",
    "expm1",
    "log1p",
    "log_sigmoid",
    "hardshrink",
    "floor_divide",
    "remainder",
    "fmod",
    "atan",
    "atan2",
    "tan",
    "trunc",
    "frac",
    "xlogy",
    "isnan",
    "isinf",
    "nan_to_num",
    "threshold",
)
def elementwise(p: Propagator, node: fx.Node) -> Any:
    """Broadcast from the right: equal-sized dimensions of inputs and output share indices."""
    out_shape = p.out_shape(node)
    n = len(out_shape)
    out: list[Space | None] = [None] * n
    for a in p.tensor_args(node):
        d = p.desc(a)
        assert d is not None  # tensor_args keeps only arguments with a description
        offset = n - len(d)
        if offset < 0:
            continue
        for i, s in enumerate(d):
            j = offset + i
            if s.size != out_shape[j] or s.size == 1:
                continue
            prev = out[j]
            out[j] = s if prev is None else p.unify(prev, s)
    return [
        s if s is not None else p.table.new(out_shape[j], "broadcast by an elementwise op")
        for j, s in enumerate(out)
    ]


@handles(
    "clone",
    "contiguous",
    "detach",
    "alias",
    "to",
    "_to_copy",
    "type_as",
    "lift_fresh_copy",
    "dropout",
    "feature_dropout",
    "alpha_dropout",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand_like",
    "randn_like",
    "_conj",
    "conj",
    "resolve_conj",
    "resolve_neg",
    "bernoulli",
    "_assert_tensor_metadata_identity",
    "positive",
    "identity",
    "_native_batch_norm_legit_no_stats_identity",
    "lift_fresh",
    "detach_copy",
    "alias_copy",
)
def _identity(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0]) if node.args else None
    if d is None:
        return p.fresh_like(node, "created by the model's code")
    shape = p.out_shape(node)
    if tuple(s.size for s in d) != shape:
        return elementwise(p, node)
    return list(d)


@handles("native_dropout")
def _native_dropout(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    return [list(d) if d else None, list(d) if d else None]


@handles("copy_", "copy")
def _copy_(p: Propagator, node: fx.Node) -> Any:
    return elementwise(p, node)


@handles(
    "_assert_tensor_metadata",
    "_assert_async",
    "_assert_scalar",
    "sym_constrain_range",
    "sym_constrain_range_for_size",
    "_functional_assert_async",
)
def _no_output(p: Propagator, node: fx.Node) -> Any:
    return None


@handles("zeros", "ones", "full", "new_zeros", "new_ones", "new_full")
def _constant(p: Propagator, node: fx.Node) -> Any:
    """A tensor of one value everywhere: any of its positions can go.

    Its literal sizes are recorded as shape sites, so that a dimension that meets a
    prunable group follows it when an attribute of the module that made it holds the size
    (T5's cross-attention builds its zero position bias as ``zeros(1, self.n_heads, q, k)``);
    the planner keeps the group whole when none does.
    """
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return p.fresh_like(node, "created by the model's code with a literal size")
    out = p.fresh(val.shape, "")
    for space in out:
        if space.size > 1:
            p.record_shape_site(node, space.size, space)
    return out


@handles(
    "arange",
    "empty",
    "scalar_tensor",
    "new_empty",
    "rand",
    "randn",
    "randint",
    "tensor",
    "linspace",
    "eye",
    "_local_scalar_dense",
    "empty_strided",
    "new_empty_strided",
    "randperm",
)
def _creation(p: Propagator, node: fx.Node) -> Any:
    return p.fresh_like(node, "created by the model's code with a literal size")


@handles("_weight_norm")
def _weight_norm(p: Propagator, node: fx.Node) -> Any:
    """``nn.utils.parametrizations.weight_norm``: ``v * g / ||v||``, the norm over every
    dimension but ``dim``. A removed input channel is a zero in every row of ``v``, so the
    norms are unchanged and ``g`` [out, 1, ...] broadcasts against ``v`` like any elementwise
    product. The rows themselves (dimension ``dim``) stay: a zeroed row has norm 0."""
    v, g = p.desc(node.args[0]), p.desc(node.args[1])
    if v is None or g is None:
        return p.unsupported(node)
    dim = wrap_dim(int_arg(node.args[2]) if len(node.args) > 2 else 0, len(v))
    reason = (
        f"the rows of the weight-normalised weight in module '{p.module_of(node)}' (a removed "
        f"row would have norm 0)"
    )
    p.taint_desc([v[dim], g[dim]], reason)
    return elementwise(p, node)


@handles("operator::getitem")
def _getitem(p: Propagator, node: fx.Node) -> Any:
    src, idx = node.args
    value = p.values.get(cast(fx.Node, src))
    if isinstance(value, list) and value and not isinstance(value[0], Space):
        item = value[cast(int, idx)]
        return list(item) if item is not None else None
    return p.fresh_like(node, "an output of an operation netsculpt does not track")
