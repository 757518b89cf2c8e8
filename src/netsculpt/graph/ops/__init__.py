"""ATen handlers, one module per family, and the registry they fill.

A handler tells the walker (:class:`netsculpt.graph.propagate.Propagator`) how one
operation couples the dimensions of its inputs and outputs. The families:

========== ==================================================================
pointwise  elementwise, identity and creation ops; items of multi-output ops
layout     permute, view/reshape, expand, repeat, cat, stack, split, unbind
indexing   slice, select, index, gather, and ops that depend on positions
reduce     reductions, softmax, batch/layer/group norms
linalg     linear, matmul, addmm, convolutions, embedding, attention
spatial    pooling, resampling, padding
recurrent  LSTM, GRU and RNN layers: hidden units across gate blocks and layers
experts    grouped matrix multiplies over mixture-of-experts weights
========== ==================================================================

Handlers are registered by namespaced overload-packet name (``"aten::linear"``,
``"mylib::my_op"``; a bare name means ``aten::``) with :func:`handles`, into the default
registry :data:`HANDLERS`. Each analysis walks with its own copy, which
``ns.analyze(..., handlers={...})`` extends for that one call (docs/extending.md).
"""

from netsculpt.graph.ops import (
    experts,
    indexing,
    layout,
    linalg,
    pointwise,
    recurrent,
    reduce,
    spatial,
)
from netsculpt.graph.ops._registry import (
    HANDLERS,
    Handler,
    Registry,
    default_registry,
    handles,
    op_name,
    qualify,
    supported_ops,
)

__all__ = [
    "FAMILIES",
    "HANDLERS",
    "Handler",
    "Registry",
    "default_registry",
    "handles",
    "op_name",
    "qualify",
    "supported_ops",
]

FAMILIES = (pointwise, layout, indexing, reduce, linalg, spatial, recurrent, experts)
"""The handler modules, in the order they register."""
