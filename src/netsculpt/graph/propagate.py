"""The walker: propagating channel spaces through a captured ATen graph.

Each node of the exported graph gets a *description*: one :class:`Space` per dimension of
its tensor output (a list of descriptions for ops returning several tensors). Handlers,
one per ATen operation family (:mod:`netsculpt.graph.ops`), couple the spaces of their
inputs and outputs. Every walk reads its own copy of the handler registry, keyed by
namespaced op names (``"aten::linear"``, ``"mylib::my_op"``); :func:`handles` adds a
handler to the defaults, ``ns.analyze(..., handlers=...)`` to one analysis
(docs/extending.md).

Anything not understood is handled conservatively: every channel that reaches an unknown
operation is marked not prunable, with the operation and module named as the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from netsculpt.errors import UnsupportedOperationError
from netsculpt.graph.ops import (
    HANDLERS,
    Handler,
    Registry,
    default_registry,
    handles,
    op_name,
    supported_ops,
)
from netsculpt.graph.ops._common import Desc
from netsculpt.graph.ops._normsite import NormSite
from netsculpt.graph.ops.pointwise import elementwise
from netsculpt.graph.spaces import Space, SpaceTable, static_size

__all__ = [
    "HANDLERS",
    "Desc",
    "GroupsSite",
    "Handler",
    "Propagator",
    "Registry",
    "ShapeSite",
    "Skipped",
    "default_registry",
    "handles",
    "op_name",
    "supported_ops",
]


@dataclass
class Skipped:
    """An operation that stopped channels from being pruned, and why."""

    op: str
    module: str
    reason: str


@dataclass
class ShapeSite:
    """A literal size in a view/reshape/expand/split that may change when channels go."""

    node: str
    module_stack: list[str]
    literal: int
    space: Space
    # a literal slice taking a whole piece of a concatenation: (dim, start, end, the
    # pieces before it); the planner rewrites its bounds when no attribute holds them
    cut: tuple[int, int, int, Space | None] | None = None


@dataclass
class GroupsSite:
    """A grouped convolution or GroupNorm whose group count follows a space."""

    module: str
    attr: str
    space: Space


@dataclass
class Propagator:
    """Walks the graph once, in order, filling ``values`` with descriptions.

    ``handlers`` is the registry this walk reads: a copy of the defaults unless given (build
    one with :func:`~netsculpt.graph.ops.default_registry`, which adds extra handlers).
    """

    program: torch.export.ExportedProgram
    handlers: Registry = field(default_factory=default_registry)
    table: SpaceTable = field(default_factory=SpaceTable)
    on_unsupported: str = "skip"
    protect_outputs: bool = True
    # residual-width pruning: norms over a hidden size record a site instead of protecting it
    residual: bool = False
    norm_sites: list[NormSite] = field(default_factory=list)
    values: dict[fx.Node, Any] = field(default_factory=dict)
    param_slots: dict[str, Desc] = field(default_factory=dict)
    buffer_slots: dict[str, Desc] = field(default_factory=dict)
    param_nodes: dict[str, str] = field(default_factory=dict)  # node name -> param name
    skipped: list[Skipped] = field(default_factory=list)
    shape_sites: list[ShapeSite] = field(default_factory=list)
    groups_sites: list[GroupsSite] = field(default_factory=list)
    node_order: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    output_slots: set[tuple[str, int]] = field(default_factory=set)
    # (space, m): a kernel needs the kept width of ``space`` to be a multiple of m
    alignments: list[tuple[Space, int]] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # parameter and buffer names

    def mark_output(self, arg: Any, dim: int) -> None:
        """Record that dimension ``dim`` of a parameter is an op's output channel dimension."""
        if isinstance(arg, fx.Node) and arg.name in self.param_nodes:
            self.output_slots.add((self.param_nodes[arg.name], dim))

    def record_shape_site(
        self,
        node: fx.Node,
        literal: int,
        space: Space,
        cut: tuple[int, int, int, Space | None] | None = None,
    ) -> None:
        """Record a literal size in ``node``'s arguments that must follow ``space``."""
        self.shape_sites.append(ShapeSite(node.name, self.module_stack(node), literal, space, cut))

    def record_groups_site(self, module: str, attr: str, space: Space) -> None:
        """Record that ``module.attr`` (a group count) must follow ``space``."""
        self.groups_sites.append(GroupsSite(module, attr, space))

    # -- helpers --------------------------------------------------------------------
    def shape(self, node: Any) -> tuple[int, ...] | None:
        if not isinstance(node, fx.Node):
            return None
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return tuple(static_size(s) for s in val.shape)
        return None

    def out_shape(self, node: fx.Node) -> tuple[int, ...]:
        shape = self.shape(node)
        return shape if shape is not None else ()

    def desc(self, arg: Any) -> Desc | None:
        if isinstance(arg, fx.Node):
            value = self.values.get(arg)
            if isinstance(value, list) and (not value or isinstance(value[0], Space)):
                return value
        return None

    def fresh(self, shape: Sequence[int], reason: str) -> Desc:
        return [self.table.new(s, reason) for s in shape]

    def module_of(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        return _clean_path(str(path))

    def release_next_factor(self, node: fx.Node, space: Space) -> None:
        """``node`` takes the outer factor ``space`` of a reshape apart (see
        :meth:`SpaceTable.release_next_factor`)."""
        # nn.MultiheadAttention computes its head width from the width of its input, so its
        # heads cannot be removed: they stay an inner factor (not a group)
        if not self.in_multihead_attention(node):
            self.table.release_next_factor(space)

    def in_multihead_attention(self, node: fx.Node) -> bool:
        """Whether ``node`` runs inside an ``nn.MultiheadAttention``."""
        stack = node.meta.get("nn_module_stack") or {}
        return any(str(v[1]).endswith("MultiheadAttention") for v in stack.values())

    def module_stack(self, node: fx.Node) -> list[str]:
        stack = node.meta.get("nn_module_stack") or {}
        return [_clean_path(str(v[0])) for v in stack.values()]

    def taint_desc(self, desc: Desc | None, reason: str) -> bool:
        """Taint every space of ``desc``; True when something prunable was blocked."""
        if not desc:
            return False
        blocked = False
        for s in desc:
            if any(not leaf.taint for leaf in self.table.all_leaves(s)):
                blocked = True
            self.table.taint(s, reason)
        return blocked

    def unify(self, a: Space, b: Space) -> Space:
        return self.table.unify(a, b)

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        for a in [*node.args, *node.kwargs.values()]:
            if isinstance(a, fx.Node) and self.desc(a) is not None:
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(x for x in a if isinstance(x, fx.Node) and self.desc(x) is not None)
        return out

    # -- the walk -------------------------------------------------------------------
    def run(self, *, more: bool = False) -> None:
        """Walk :attr:`program`. With ``more``, a second capture of the same model is walked
        into the same spaces: each parameter and buffer keeps the description the first walk
        gave it, so the constraints of both graphs hold (:meth:`add_program`)."""
        sig = self.program.graph_signature
        params = dict(sig.inputs_to_parameters)
        buffers = dict(sig.inputs_to_buffers)
        user_inputs = set(sig.user_inputs)
        unread_before = list(self.unread)
        self.unread = []
        for i, node in enumerate(self.program.graph.nodes):
            if not more:
                self.node_order[node.name] = i
            if node.op == "placeholder":
                shape = self.shape(node)
                if shape is None:
                    self.values[node] = None
                    continue
                if node.name in params:
                    desc = self._slot(self.param_slots, params[node.name], shape)
                    self.param_nodes[node.name] = params[node.name]
                elif node.name in buffers:
                    desc = self._slot(self.buffer_slots, buffers[node.name], shape)
                elif node.name in user_inputs:
                    desc = self.fresh(shape, "a model input's dimension")
                else:
                    desc = self.fresh(shape, "a constant tensor's dimension")
                self.values[node] = desc
            elif node.op == "call_function":
                self.values[node] = self.call(node)
            elif node.op == "output":
                if self.protect_outputs:
                    leaves, _ = torch.utils._pytree.tree_flatten(node.args[0])
                    for leaf in leaves:
                        self.taint_desc(self.desc(leaf), "feeds a model output")
            else:  # get_attr (submodules of higher-order ops)
                self.values[node] = None
        # a parameter or buffer the graph never reads keeps its size; the analysis taints
        # it once tied names (the second name of a tied weight is never read) are joined
        for node in self.program.graph.nodes:
            if node.op == "placeholder" and not node.users and node.name in {**params, **buffers}:
                self.unread.append({**params, **buffers}[node.name])
        if more:  # unread only when neither graph reads it
            self.unread = [n for n in unread_before if n in self.unread]
        # remember which ops read each parameter
        for node in self.program.graph.nodes:
            if node.op != "call_function":
                continue
            for pos, a in enumerate(node.args):
                if isinstance(a, fx.Node) and a.name in self.param_nodes:
                    self.consumers.setdefault(self.param_nodes[a.name], []).append(
                        (op_name(node.target), self.module_of(node), pos)
                    )

    def _slot(self, slots: dict[str, Desc], name: str, shape: Sequence[int]) -> Desc:
        """The description of parameter or buffer ``name``: the one an earlier walk gave
        it, else fresh spaces of ``shape``."""
        known = slots.get(name)
        if known is not None and tuple(s.size for s in known) == tuple(shape):
            return known
        slots[name] = self.fresh(shape, "")
        return slots[name]

    def add_program(self, program: torch.export.ExportedProgram) -> None:
        """Walk ``program``, another capture of the same model (its training-mode forward),
        into these spaces. The first program stays :attr:`program` (blocks, node order)."""
        first = self.program
        self.program = program
        try:
            self.run(more=True)
        finally:
            self.program = first

    def call(self, node: fx.Node) -> Any:
        name = op_name(node.target)
        handler = self.handlers.lookup(name)
        if handler is None and name.endswith("_"):  # an in-place variant: "aten::relu_"
            handler = self.handlers.lookup(name[:-1])
        if handler is None and _is_pointwise(node.target):
            handler = elementwise
        if handler is None:
            return self.unsupported(node, name)
        try:
            return handler(self, node)
        except UnsupportedOperationError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected argument form: be conservative
            return self.unsupported(
                node,
                name,
                why=f"reaches '{name}' in module '{self.module_of(node) or '<top>'}'"
                f" with arguments netsculpt does not understand ({type(exc).__name__}: {exc})",
            )

    def unsupported(self, node: fx.Node, name: str | None = None, why: str = "") -> Any:
        """Protect every channel that reaches ``node`` and list it in ``skipped``.

        ``name`` defaults to the node's namespaced op name; ``why`` replaces the reason.
        """
        name = name or op_name(node.target)
        module = self.module_of(node)
        reason = why or (
            f"reaches '{name}' in module '{module or '<top>'}', which netsculpt cannot "
            f"propagate channels through"
        )
        blocked = False
        for a in self.tensor_args(node):
            blocked |= self.taint_desc(self.desc(a), reason)
        if blocked:
            if self.on_unsupported == "error":
                raise UnsupportedOperationError(
                    f"module '{module or '<top>'}' calls '{name}', which netsculpt cannot "
                    f"propagate channels through; exclude it with exclude=[{module!r}], or "
                    f"register a handler for {name!r} with netsculpt.graph.ops.handles or "
                    f"ns.analyze(..., handlers={{{name!r}: handler}}) (docs/extending.md)"
                )
            self.skipped.append(Skipped(op=name, module=module, reason=reason))
        return self.fresh_like(node, reason)

    def fresh_like(self, node: fx.Node, reason: str) -> Any:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return self.fresh(val.shape, reason)
        if isinstance(val, (list, tuple)):
            return [
                self.fresh(v.shape, reason) if isinstance(v, torch.Tensor) else None for v in val
            ]
        return None

    def fresh_like_tensor(self, val: Any, reason: str) -> Desc | None:
        """Fresh spaces for one tensor of a node's outputs (None for a non-tensor)."""
        if isinstance(val, torch.Tensor):
            return self.fresh(val.shape, reason)
        return None


def _clean_path(path: str) -> str:
    # strict-mode exports name modules like "L['self'].layer1"; keep the attribute path
    if path.startswith("L['self']"):
        path = path[len("L['self']") :].lstrip(".")
    return path


def _is_pointwise(target: Any) -> bool:
    tags = getattr(target, "tags", ())
    return torch.Tag.pointwise in tags
