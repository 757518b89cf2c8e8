"""Propagating channel spaces through a captured ATen graph.

Each node of the exported graph gets a *description*: one :class:`Space` per dimension of
its tensor output (a list of descriptions for ops returning several tensors). Handlers,
one per ATen operation family, couple the spaces of their inputs and outputs. The
registry ``HANDLERS`` is a plain dict filled by the :func:`handles` decorator; a user can
add a handler for an op netsculpt does not know in one short function (docs/extending.md).

Anything not understood is handled conservatively: every channel that reaches an unknown
operation is marked not prunable, with the operation and module named as the reason.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import fx

from netsculpt.errors import UnsupportedOperationError
from netsculpt.graph.spaces import Space, SpaceTable

Desc = list[Space]
Handler = Callable[["Propagator", fx.Node], Any]

HANDLERS: dict[str, Handler] = {}

INNER_FACTOR = "inner factor of a reshape (such as an attention head dimension)"


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for ATen ops by overload-packet name (``"linear"``, ``"conv2d"``)."""

    def deco(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return deco


def op_name(target: Any) -> str:
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        return str(packet.__name__)
    if target is operator.getitem:
        return "getitem"
    return str(getattr(target, "__name__", target))


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


@dataclass
class GroupsSite:
    """A grouped convolution or GroupNorm whose group count follows a space."""

    module: str
    attr: str
    space: Space


@dataclass
class Propagator:
    """Walks the graph once, in order, filling ``values`` with descriptions."""

    program: torch.export.ExportedProgram
    table: SpaceTable = field(default_factory=SpaceTable)
    on_unsupported: str = "skip"
    protect_outputs: bool = True
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

    def mark_output(self, arg: Any, dim: int) -> None:
        """Record that dimension ``dim`` of a parameter is an op's output channel dimension."""
        if isinstance(arg, fx.Node) and arg.name in self.param_nodes:
            self.output_slots.add((self.param_nodes[arg.name], dim))

    # -- helpers --------------------------------------------------------------------
    def shape(self, node: Any) -> tuple[int, ...] | None:
        if not isinstance(node, fx.Node):
            return None
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return tuple(int(s) for s in val.shape)
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
    def run(self) -> None:
        sig = self.program.graph_signature
        params = dict(sig.inputs_to_parameters)
        buffers = dict(sig.inputs_to_buffers)
        user_inputs = set(sig.user_inputs)
        for i, node in enumerate(self.program.graph.nodes):
            self.node_order[node.name] = i
            if node.op == "placeholder":
                shape = self.shape(node)
                if shape is None:
                    self.values[node] = None
                    continue
                if node.name in params:
                    desc = self.fresh(shape, "")
                    self.param_slots[params[node.name]] = desc
                    self.param_nodes[node.name] = params[node.name]
                elif node.name in buffers:
                    desc = self.fresh(shape, "")
                    self.buffer_slots[buffers[node.name]] = desc
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
        # a parameter or buffer the graph never reads (for example the second name of a
        # tied weight) keeps its size
        for node in self.program.graph.nodes:
            if node.op == "placeholder" and not node.users and node.name in {**params, **buffers}:
                self.taint_desc(self.desc(node), "not read by the captured graph")
        # remember which ops read each parameter
        for node in self.program.graph.nodes:
            if node.op != "call_function":
                continue
            for pos, a in enumerate(node.args):
                if isinstance(a, fx.Node) and a.name in self.param_nodes:
                    self.consumers.setdefault(self.param_nodes[a.name], []).append(
                        (op_name(node.target), self.module_of(node), pos)
                    )

    def call(self, node: fx.Node) -> Any:
        name = op_name(node.target)
        handler = HANDLERS.get(name)
        if handler is None and name.endswith("_") and name[:-1] in HANDLERS:
            handler = HANDLERS[name[:-1]]
        if handler is None and _is_pointwise(node.target):
            handler = HANDLERS["add"]
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

    def unsupported(self, node: fx.Node, name: str, why: str = "") -> Any:
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
                    f"propagate channels through; exclude it with exclude=[{module!r}] or "
                    f"register a handler with netsculpt.graph.propagate.handles "
                    f"(docs/extending.md)"
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


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


# torch.fx types node arguments as one broad union (``Argument``); the handlers below know
# from the op's schema which arguments are integers or lists, and say so through these.
def _int(arg: Any) -> int:
    """An integer argument of an ATen call."""
    return int(arg)


def _seq(arg: Any) -> list[Any]:
    """A list argument of an ATen call (sizes, dims, tensors)."""
    return list(arg)


# ---------------------------------------------------------------------------------------
# elementwise, identity, creation
# ---------------------------------------------------------------------------------------


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
def _pointwise(p: Propagator, node: fx.Node) -> Any:
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
        return _pointwise(p, node)
    return list(d)


@handles("native_dropout")
def _native_dropout(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    return [list(d) if d else None, list(d) if d else None]


@handles("copy_", "copy")
def _copy_(p: Propagator, node: fx.Node) -> Any:
    return _pointwise(p, node)


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


@handles(
    "arange",
    "zeros",
    "ones",
    "full",
    "empty",
    "scalar_tensor",
    "new_zeros",
    "new_ones",
    "new_full",
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


@handles("getitem")
def _getitem(p: Propagator, node: fx.Node) -> Any:
    src, idx = node.args
    value = p.values.get(cast(fx.Node, src))
    if isinstance(value, list) and value and not isinstance(value[0], Space):
        item = value[cast(int, idx)]
        return list(item) if item is not None else None
    return p.fresh_like(node, "an output of an operation netsculpt does not track")


# ---------------------------------------------------------------------------------------
# layout: permute, reshape, expand, cat, split, slice, select, index
# ---------------------------------------------------------------------------------------


@handles("permute", "permute_copy")
def _permute(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dims = [_dim(_int(x), len(d)) for x in _seq(node.args[1])]
    return [d[i] for i in dims]


@handles("transpose", "transpose_copy", "swapaxes", "swapdims")
def _transpose(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    d = list(d)
    a, b = (_dim(_int(x), len(d)) for x in node.args[1:3])
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
    dim = _dim(_int(node.args[1]), len(d) + 1)
    d.insert(dim, p.table.new(1))
    return d


@handles("squeeze", "squeeze_copy")
def _squeeze(p: Propagator, node: fx.Node) -> Any:
    d = list(p.desc(node.args[0]) or [])
    if len(node.args) > 1:
        arg = node.args[1]
        dims = [_dim(_int(x), len(d)) for x in ([arg] if isinstance(arg, int) else _seq(arg))]
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
            p.shape_sites.append(ShapeSite(node.name, p.module_stack(node), int(lit), space))


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
    reps = _seq(node.args[1])
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
    tensors = [t for t in _seq(node.args[0]) if p.desc(t)]
    out_shape = p.out_shape(node)
    dim = _dim(_int(node.args[1]) if len(node.args) > 1 else 0, len(out_shape))
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
    dim = _dim(_int(node.args[1]) if len(node.args) > 1 else 0, len(out_shape))
    descs = [x for x in (p.desc(t) for t in _seq(node.args[0])) if x is not None]
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
            p.shape_sites.append(ShapeSite(node.name, p.module_stack(node), size, piece))
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
    dim = _dim(_int(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)), len(d))
    vals = node.meta.get("val")
    sizes = [int(v.shape[dim]) for v in _seq(vals)]
    return _split_pieces(p, node, d, dim, sizes)


@handles("unbind", "unbind_copy")
def _unbind(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = _dim(_int(node.args[1]) if len(node.args) > 1 else 0, len(d))
    p.taint_desc([d[dim]], f"unbound into separate tensors in module '{p.module_of(node)}'")
    return [[s for i, s in enumerate(d) if i != dim] for _ in range(d[dim].size)]


@handles("slice", "slice_copy", "narrow")
def _slice(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    name = op_name(node.target)
    dim = _dim(_int(node.args[1]) if len(node.args) > 1 else 0, len(d))
    size = d[dim].size
    if name == "narrow":
        start, length = _int(node.args[2]), _int(node.args[3])
        end, step = start + length, 1
    else:
        start_arg = node.args[2] if len(node.args) > 2 else 0
        end_arg = node.args[3] if len(node.args) > 3 else None
        step = _int(node.args[4]) if len(node.args) > 4 else 1
        start = 0 if start_arg is None else _int(start_arg)
        end = size if end_arg is None else _int(end_arg)
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
    p.shape_sites.append(ShapeSite(node.name, p.module_stack(node), end - start, out[dim]))
    return out


@handles("select", "select_copy")
def _select(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    dim = _dim(_int(node.args[1]), len(d))
    if d[dim].size > 1:
        p.taint_desc([d[dim]], f"indexed with a literal in module '{p.module_of(node)}'")
    return [s for i, s in enumerate(d) if i != dim]


@handles("index", "_unsafe_index", "index_select", "gather", "take_along_dim")
def _index(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    out_shape = p.out_shape(node)
    if d is None:
        return p.fresh_like(node, "")
    name = op_name(node.target)
    reason = f"indexed by a tensor in module '{p.module_of(node)}'"
    if name in ("index", "_unsafe_index"):
        indices = _seq(node.args[1])
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
    dim = _dim(_int(node.args[1]), len(d))
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
    "constant_pad_nd",
    "pad",
    "reflection_pad1d",
    "reflection_pad2d",
    "replication_pad1d",
    "replication_pad2d",
    "reflection_pad3d",
    "replication_pad3d",
    "circular_pad2d",
)
def _pad(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    out_shape = p.out_shape(node)
    if d is None:
        return p.fresh_like(node, "")
    out: Desc = []
    for i, s in enumerate(d):
        if s.size == out_shape[i]:
            out.append(s)
        else:
            p.taint_desc([s], f"padded in module '{p.module_of(node)}'")
            out.append(p.table.new(out_shape[i], "padded"))
    return out


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
    name = op_name(node.target)
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
            dims = _seq(arg)
    else:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
        if name == "topk":
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", -1)
        dims = [dim]
    dims = [_dim(_int(x), len(d)) for x in dims]
    for i in dims:
        p.taint_desc([d[i]], reason)
    val = node.meta.get("val")
    val_shape = p.out_shape(node) if isinstance(val, torch.Tensor) else cast(Any, val)[0].shape
    out = [
        s if s.size == int(val_dim) else p.table.new(int(val_dim), reason)
        for s, val_dim in zip(d, val_shape, strict=False)
    ]
    if isinstance(val, (list, tuple)):
        return [out, list(out)]
    return out


# ---------------------------------------------------------------------------------------
# reductions and normalisations
# ---------------------------------------------------------------------------------------

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
    name = op_name(node.target)
    if d is None:
        return p.fresh_like(node, "")
    if len(node.args) > 1 and isinstance(node.args[1], fx.Node):
        return _pointwise(p, node)  # max(a, b), min(a, b): elementwise
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
        dims = [_dim(dims_arg, ndim)]
    else:
        dims = [_dim(int(x), ndim) for x in dims_arg]
    if name in _TAINTING_REDUCTIONS:
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
    dim = _dim(_int(node.args[1]), len(d))
    if d[dim].size > 1:
        p.taint_desc([d[dim]], f"softmax over it in module '{p.module_of(node)}'")
    return list(d)


@handles("layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm")
def _layer_norm(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    norm_shape = _seq(node.args[1])
    n = len(norm_shape)
    tail = d[len(d) - n :]
    for a in node.args[2:4]:
        w = p.desc(a)
        if w is not None and len(w) == n:
            for x, y in zip(tail, w, strict=True):
                p.unify(x, y)
    p.taint_desc(
        tail,
        f"normalised over by '{op_name(node.target)}' in module "
        f"'{p.module_of(node)}' (its statistics depend on every channel)",
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


@handles("group_norm", "native_group_norm")
def _group_norm(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    name = op_name(node.target)
    if name == "group_norm":
        groups = _int(node.args[1])
        weights = node.args[2:4]
    else:
        groups = _int(node.args[6])
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
        p.groups_sites.append(GroupsSite(p.module_of(node), "num_groups", g))
    val = node.meta.get("val")
    out = list(d)
    if isinstance(val, (list, tuple)):
        return [out] + [p.fresh(v.shape, "group statistics") for v in val[1:]]
    return out


# ---------------------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------------------


@handles("linear")
def _linear(p: Propagator, node: fx.Node) -> Any:
    x, w = p.desc(node.args[0]), p.desc(node.args[1])
    b = p.desc(node.args[2]) if len(node.args) > 2 else None
    if x is None or w is None:
        return p.unsupported(node, "linear")
    p.unify(x[-1], w[-1])
    p.mark_output(node.args[1], 0)
    out = list(x[:-1]) + [w[0]] if len(w) == 2 else list(x[:-1])
    if b is not None and len(w) == 2:
        p.unify(b[0], w[0])
    return out


def _matmul_desc(p: Propagator, a: Desc, b: Desc, out_shape: Sequence[int]) -> Desc:
    a1 = len(a) == 1
    b1 = len(b) == 1
    if a1:
        a = [p.table.new(1)] + list(a)
    if b1:
        b = list(b) + [p.table.new(1)]
    p.unify(a[-1], b[-2])
    batch_a, batch_b = a[:-2], b[:-2]
    n = max(len(batch_a), len(batch_b))
    batch: Desc = []
    for i in range(n):
        ia, ib = i - (n - len(batch_a)), i - (n - len(batch_b))
        sa = batch_a[ia] if ia >= 0 else None
        sb = batch_b[ib] if ib >= 0 else None
        if sa is not None and sb is not None and sa.size == sb.size and sa.size != 1:
            batch.append(p.unify(sa, sb))
        elif sa is not None and (sb is None or sb.size == 1):
            batch.append(sa)
        elif sb is not None:
            batch.append(sb)
    out = batch + ([] if a1 else [a[-2]]) + ([] if b1 else [b[-1]])
    if tuple(s.size for s in out) != tuple(out_shape):
        return p.fresh(out_shape, "matmul")
    return out


@handles("matmul", "mm", "bmm")
def _matmul(p: Propagator, node: fx.Node) -> Any:
    a, b = p.desc(node.args[0]), p.desc(node.args[1])
    if a is None or b is None:
        return p.unsupported(node, op_name(node.target))
    return _matmul_desc(p, a, b, p.out_shape(node))


@handles("addmm", "baddbmm", "addbmm")
def _addmm(p: Propagator, node: fx.Node) -> Any:
    bias, a, b = (p.desc(x) for x in node.args[:3])
    if a is None or b is None:
        return p.unsupported(node, op_name(node.target))
    out = _matmul_desc(p, a, b, p.out_shape(node))
    if len(b) == 2:
        p.mark_output(node.args[2], 1)
    if bias is not None:
        for k, s in enumerate(reversed(bias)):
            t = out[len(out) - 1 - k]
            if s.size == t.size and s.size != 1:
                p.unify(s, t)
    return out


@handles(
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "_convolution",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
def _conv(p: Propagator, node: fx.Node) -> Any:
    name = op_name(node.target)
    x, w = p.desc(node.args[0]), p.desc(node.args[1])
    b = p.desc(node.args[2]) if len(node.args) > 2 else None
    if x is None or w is None:
        return p.unsupported(node, name)
    args = list(node.args)
    if name in ("convolution", "_convolution"):
        transposed = bool(args[6])
        groups = _int(args[8])
    elif name.startswith("conv_transpose"):
        transposed = True
        groups = _int(args[6] if len(args) > 6 else node.kwargs.get("groups", 1))
    else:
        transposed = False
        groups = _int(args[6] if len(args) > 6 else node.kwargs.get("groups", 1))
    module = p.module_of(node)
    for s in w[2:]:
        p.table.taint(s, "a convolution kernel dimension")
    p.taint_desc(x[2:] if len(x) == len(w) else x[1:], "a spatial dimension")
    out_shape = p.out_shape(node)
    batched = len(x) == len(w)
    xc = x[1] if batched else x[0]
    p.mark_output(node.args[1], 1 if transposed else 0)
    if transposed:
        if groups == 1:
            p.unify(xc, w[0])
            out_c = w[1]
        else:
            reason = f"a grouped transposed convolution in '{module}'"
            p.taint_desc([xc, w[0], w[1]], reason)
            out_c = p.table.new(out_shape[1 if batched else 0], reason)
    elif groups == 1:
        p.unify(xc, w[1])
        out_c = w[0]
    else:
        cin, cout = xc.size, w[0].size
        g_in = p.table.new(groups)
        p.unify(xc, p.table.make_prod([g_in, p.table.new(cin // groups)]))
        g_out = p.table.new(groups)
        p.unify(w[0], p.table.make_prod([g_out, p.table.new(cout // groups)]))
        p.unify(g_in, g_out)
        in_leaves = p.table.leaves(xc)
        if cin // groups > 1:
            p.unify(in_leaves[-1] if len(in_leaves) > 1 else xc, w[1])
        p.groups_sites.append(GroupsSite(module, "groups", g_in))
        out_c = w[0]
    if b is not None:
        p.unify(b[0], out_c)
    out: Desc = []
    if batched:
        out.append(x[0])
    out.append(out_c)
    for size in out_shape[len(out) :]:
        out.append(p.table.new(size, "a spatial dimension"))
    return out


@handles("embedding", "_embedding_bag", "embedding_bag")
def _embedding(p: Propagator, node: fx.Node) -> Any:
    w, idx = p.desc(node.args[0]), p.desc(node.args[1])
    if w is None:
        return p.unsupported(node, "embedding")
    p.table.taint(w[0], "rows of an embedding table (vocabulary or positions)")
    p.mark_output(node.args[0], 1)
    out_shape = p.out_shape(node)
    out = list(idx or []) + [w[1]]
    if tuple(s.size for s in out) != tuple(out_shape):
        return p.fresh_like(node, "embedding")
    return out


@handles(
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
)
def _sdpa(p: Propagator, node: fx.Node) -> Any:
    q, k, v = (p.desc(a) for a in node.args[:3])
    if q is None or k is None or v is None:
        return p.unsupported(node, op_name(node.target))
    module = p.module_of(node)
    head_reason = (
        f"an attention head dimension in '{module}' (scaling and rotary embeddings depend on it)"
    )
    p.unify(q[-1], k[-1])
    p.table.taint(q[-1], head_reason)
    p.table.taint(v[-1], head_reason)
    p.unify(k[-2], v[-2])
    if len(q) >= 3 and len(k) >= 3:
        hq, hk = q[-3], k[-3]
        p.unify(hk, v[-3])
        if hq.size == hk.size:
            p.unify(hq, hk)
        elif hk.size and hq.size % hk.size == 0:
            rep = p.table.new(
                hq.size // hk.size, f"query heads sharing one key/value head in '{module}'"
            )
            p.unify(hq, p.table.make_prod([hk, rep]))
        for i in range(len(q) - 3):
            if q[i].size == k[i].size and q[i].size != 1:
                p.unify(q[i], k[i])
    out = list(q[:-1]) + [v[-1]]
    mask = p.desc(node.args[3]) if len(node.args) > 3 else p.desc(node.kwargs.get("attn_mask"))
    if mask is not None:
        scores = list(q[:-1]) + [k[-2]]
        for i, s in enumerate(reversed(mask)):
            t = scores[len(scores) - 1 - i] if i < len(scores) else None
            if t is not None and s.size == t.size and s.size != 1:
                p.unify(s, t)
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return [out] + [p.fresh_like_tensor(v_, "attention statistics") for v_ in val[1:]]
    return out


# ---------------------------------------------------------------------------------------
# spatial ops that keep batch and channel dimensions
# ---------------------------------------------------------------------------------------


@handles(
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool1d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "upsample_bilinear2d",
    "upsample_bicubic2d",
    "upsample_linear1d",
    "upsample_trilinear3d",
    "_upsample_nearest_exact2d",
    "_upsample_bilinear2d_aa",
    "interpolate",
    "grid_sampler",
    "grid_sampler_2d",
    "lp_pool2d",
)
def _spatial(p: Propagator, node: fx.Node) -> Any:
    d = p.desc(node.args[0])
    if d is None:
        return p.fresh_like(node, "")
    val = node.meta.get("val")
    shape = tuple(val[0].shape) if isinstance(val, (list, tuple)) else p.out_shape(node)
    p.taint_desc(d[2:], "a spatial dimension")
    out: Desc = []
    for i, size in enumerate(shape):
        if i < 2 and i < len(d) and d[i].size == size:
            out.append(d[i])
        else:
            out.append(p.table.new(size, "a spatial dimension"))
    if isinstance(val, (list, tuple)):
        return [out, list(out)]
    return out


def supported_ops() -> list[str]:
    """Names of the ATen operation families netsculpt propagates channels through."""
    return sorted(HANDLERS)
