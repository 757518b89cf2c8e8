"""Recurrent layers: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (``aten.lstm``, ``aten.gru``,
``aten.rnn_tanh``, ``aten.rnn_relu``).

``torch.export`` keeps a recurrent module as one call with a flat weight list: per layer and
direction ``weight_ih_l{k}[_reverse]`` (``[gates * hidden, input]``), ``weight_hh_l{k}``
(``[gates * hidden, hidden]``) and, with biases, ``bias_ih_l{k}`` and ``bias_hh_l{k}``
(``[gates * hidden]``). The gate blocks are stacked along the rows (LSTM: i, f, g, o;
GRU: r, z, n; RNN: one), so row ``g * hidden + j`` belongs to hidden unit ``j``: the rows
are the product of a gate factor (never cut) and the hidden units.

One hidden unit is one prunable unit, and a unit ``j`` spans every place ``h_j`` is made
or read: its row in each gate block of the input and recurrent weights and biases, column
``j`` of every ``weight_hh`` (the recurrent input), the columns of the next layer's
``weight_ih`` that read it, the hidden dimension of the initial and final states
(``h_n``, ``c_n``) and whatever consumes the output (a classifier on the last step).
``nn.LSTM`` has one ``hidden_size`` for all its layers and directions, so one group per
module holds hidden unit ``j`` of every layer and of both directions: the output of a
bidirectional layer is the concatenation ``[forward units, backward units]`` of the same
group. The input width of the first layer follows whatever produced the input (an
embedding or a linear layer becomes prunable through the LSTM).

The zero initial state the module makes itself (no ``hx`` passed) is sized from its
``hidden_size``, which :func:`netsculpt.apply` sets from the sliced weights. Removing units
whose gate rows are zero is exact: with zero pre-activations an LSTM unit
gets ``c_j = 0.5 * c_j + 0.5 * tanh(0) = 0`` and ``h_j = 0`` at every step, a GRU unit
``n_j = tanh(0) = 0`` and ``h_j = 0.5 * h_j = 0``, an Elman unit ``h_j = tanh(0) = 0``
(or ``relu(0)``), from a zero initial state; every reader of ``h_j`` then reads zero.
A non-zero initial state the caller passes is a model input, whose width is kept.

An LSTM with ``proj_size`` (a projected hidden state of another width) and packed
sequences are protected, with the reason in ``graph.skipped``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from netsculpt.graph.ops._common import Desc, int_arg, list_arg
from netsculpt.graph.ops._registry import handles, short_name

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator
    from netsculpt.graph.spaces import Space

__all__ = ["GATES"]

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
"""Gate blocks stacked in the rows of each recurrent weight, by ATen op name."""

_LABEL = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


@handles("lstm", "gru", "rnn_tanh", "rnn_relu")
def _recurrent(p: Propagator, node: fx.Node) -> Any:
    name = short_name(node.target)
    label = _LABEL[name]
    module = p.module_of(node) or "<top>"
    overload = getattr(node.target, "_overloadname", "input")
    if overload != "input":
        return p.unsupported(
            node,
            why=f"reaches '{name}' with a packed sequence in {label} '{module}'; netsculpt "
            f"prunes recurrent units only on padded tensors (call the module on a tensor, "
            f"not a PackedSequence)",
        )
    args = list(node.args)
    x = p.desc(args[0])
    hx_nodes = list_arg(args[1]) if name == "lstm" else [args[1]]
    params = list_arg(args[2])
    has_biases = bool(args[3])
    num_layers = int_arg(args[4])
    directions = 2 if bool(args[7]) else 1
    per = len(params) // max(1, num_layers * directions)
    found = [p.desc(w) for w in params]
    weights: list[Desc] = [w for w in found if w is not None]
    states = [p.desc(h) for h in hx_nodes]
    hx: list[Desc] = [h for h in states if h is not None]
    val = node.meta.get("val")
    if (
        x is None
        or len(weights) != len(params)
        or len(hx) != len(hx_nodes)
        or per * num_layers * directions != len(params)
        or not isinstance(val, (list, tuple))
        or len(val) != 1 + len(hx)
    ):
        return p.unsupported(node)
    gates = GATES[name]
    w_ih, w_hh = p.shape(params[0]), p.shape(params[1])
    if w_ih is None or w_hh is None:
        return p.unsupported(node)
    hidden_size = w_ih[0] // gates
    if per != (4 if has_biases else 2) or w_hh[1] != hidden_size:
        return p.unsupported(
            node,
            why=f"reaches '{name}' in {label} '{module}', whose hidden state is projected "
            f"(proj_size={w_hh[1]}, hidden_size={hidden_size}); netsculpt does not prune "
            f"projected LSTM units yet, so the module keeps its size (build it with "
            f"proj_size=0 to prune its hidden units)",
        )
    expected = [(*(s.size for s in x[:-1]), directions * hidden_size)]
    expected += [(*(s.size for s in h[:-1]), hidden_size) for h in hx]
    if [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in val] != expected:
        return p.unsupported(node)

    hidden = p.table.new(hidden_size)
    rows: Space = hidden
    if gates > 1:
        gate = p.table.new(gates, f"the gate blocks of {label} '{module}'")
        rows = p.table.make_prod([gate, hidden])
    out_feat = hidden if directions == 1 else p.table.make_cat([hidden, hidden])
    layer_in = x[-1]
    for layer in range(num_layers):
        for direction in range(directions):
            base = (layer * directions + direction) * per
            ih, hh = weights[base], weights[base + 1]
            p.unify(ih[0], rows)
            p.unify(hh[0], rows)
            p.unify(hh[1], hidden)
            p.unify(ih[1], layer_in)
            p.mark_output(params[base], 0)
            p.mark_output(params[base + 1], 0)
            if has_biases:
                p.unify(weights[base + 2][0], rows)
                p.unify(weights[base + 3][0], rows)
        layer_in = out_feat
    for h_node, h in zip(hx_nodes, hx, strict=True):
        # the zero state nn.LSTM/GRU makes itself follows its hidden_size, which apply sets
        if not _own_zero_state(p, h_node, node):
            p.unify(h[-1], hidden)
    return [list(x[:-1]) + [out_feat], *(list(h[:-1]) + [hidden] for h in hx)]


def _own_zero_state(p: Propagator, state: Any, node: fx.Node) -> bool:
    """Whether ``state`` is the all-zero initial state the recurrent module itself creates
    (``torch.zeros(layers * directions, batch, self.hidden_size)`` when none is passed)."""
    return (
        isinstance(state, fx.Node)
        and state.op == "call_function"
        and short_name(state.target) in ("zeros", "new_zeros")
        and p.module_of(state) == p.module_of(node)
    )
