"""``ns.analyze``: the dependency groups of a model, read-only.

A *group* is a set of channels that must be removed together: the output channels of a
convolution with the batch-norm after it and the input channels of the next convolution;
the neurons of a transformer feed-forward layer (up, gate and down projections); the
attention heads of a layer (query, key, value and output projections; with grouped-query
attention, whole key/value groups with the query heads that share them).

>>> graph = ns.analyze(model, example_inputs)                  # doctest: +SKIP
>>> [(g.name, g.kind, g.size) for g in graph.prunable_groups]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_number
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, NetsculptError
from netsculpt.graph._arguments import (
    check_bool,
    check_model_and_inputs,
    check_selection,
    match_names,
)
from netsculpt.graph._norms import NormSite, settle_norm_sites
from netsculpt.graph.capture import capture
from netsculpt.graph.propagate import (
    GroupsSite,
    Handler,
    Propagator,
    ShapeSite,
    Skipped,
    default_registry,
    op_name,
)
from netsculpt.graph.spaces import Space, SpaceTable, static_size

__all__ = ["Graph", "Group", "Slot", "analyze", "match_names"]


@dataclass(frozen=True)
class Slot:
    """One dimension of one parameter or buffer that a group touches."""

    tensor: str  # parameter or buffer name, e.g. "layer1.0.conv1.weight"
    dim: int
    is_buffer: bool = False


@dataclass(frozen=True)
class Group:
    """Channels that are removed together.

    ``size`` is the number of prunable units (channels, neurons, heads or key/value
    groups); ``unit_width`` is how many tensor positions one unit spans in its narrowest
    weight (for heads: the head dimension; 1 for channels and neurons). ``reason`` says
    why a group is not prunable; ``note`` adds a remark for people (grouped-query
    attention).
    """

    name: str
    kind: str  # "channels", "neurons" or "heads"
    size: int
    prunable: bool
    reason: str
    stage: str
    module: str
    params: tuple[str, ...]
    slots: tuple[Slot, ...] = field(repr=False)
    unit_width: int = 1
    note: str = ""
    uid: int = field(default=0, repr=False, compare=False)
    multiple: int = 1  # the kept width must be a multiple of this (a kernel's alignment)


@dataclass
class Graph:
    """The result of :func:`analyze`: groups, skipped operations and capture statistics."""

    model_name: str
    groups: list[Group]
    skipped: list[Skipped]
    capture_seconds: float
    n_nodes: int
    blocks: list[str] = field(default_factory=list)
    block_kinds: dict[str, str] = field(default_factory=dict)
    # internals used by the planner
    table: SpaceTable = field(default_factory=SpaceTable, repr=False)
    slot_spaces: dict[tuple[str, int], Space] = field(default_factory=dict, repr=False)
    shape_sites: list[ShapeSite] = field(default_factory=list, repr=False)
    groups_sites: list[GroupsSite] = field(default_factory=list, repr=False)
    buffers: set[str] = field(default_factory=set, repr=False)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list, repr=False)
    protect_outputs: bool = True
    residual: bool = False
    norm_sites: list[NormSite] = field(default_factory=list, repr=False)
    _index_cache: dict[tuple[str, int], dict[int, tuple[Space, np.ndarray]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def index_map(self, tensor: str, dim: int) -> dict[int, tuple[Space, np.ndarray]]:
        """For each leaf in a tensor dimension: the leaf's index at every position (-1: absent)."""
        key = (tensor, dim)
        cached = self._index_cache.get(key)
        if cached is None:
            cached = self.table.index_map(self.slot_spaces[key])
            self._index_cache[key] = cached
        return cached

    def summary(self) -> str:
        lines = [
            (
                f"{self.model_name}: {len(self.prunable_groups)} prunable groups, "
                f"{len(self.groups) - len(self.prunable_groups)} protected, "
                f"captured in {self.capture_seconds:.2f} s ({self.n_nodes} nodes)"
            )
        ]
        for g in self.groups:
            state = "prunable" if g.prunable else f"protected: {g.reason}"
            lines.append(f"  {g.name:<48} {g.kind:<8} {g.size:>6}  {state}")
        return "\n".join(lines)


def analyze(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    exclude: Sequence[str] = (),
    protect_outputs: bool = True,
    residual: bool = False,
    on_unsupported: str = "skip",
    handlers: Mapping[str, Handler] | None = None,
    timeout_s: float | None = 120.0,
) -> Graph:
    """Capture ``model`` and find its dependency groups.

    Args:
        model: any ``torch.nn.Module``; it is not modified.
        example_inputs: a tensor, a tuple of tensors, or a dict of keyword inputs.
        exclude: module names (or ``"re:"`` patterns) whose parameters must keep their size.
        protect_outputs: keep every model output's shape (default). ``False`` lets hidden
            sizes that feed outputs be pruned too.
        residual: let hidden sizes normalised by ``nn.LayerNorm`` or RMS norms (the
            residual width of a transformer) be pruned; the norms are resized so that the
            pruned model stays exact (:mod:`netsculpt.graph._norms`). Default False: those
            sizes are protected.
        on_unsupported: ``"skip"`` (channels reaching an unknown op are protected and listed
            in ``graph.skipped``) or ``"error"`` (raise :class:`UnsupportedOperationError`).
        handlers: extra operation handlers for this analysis only, by namespaced op name
            (``{"mylib::my_op": fn}``); they extend or override the defaults
            (docs/extending.md).
        timeout_s: bound, in seconds, on the whole capture (``None``: no bound); it holds
            in any thread and uses no signal.

    A model whose every weight is on the meta device may be analysed with meta inputs
    (the structure only; no weight is read); any mix of meta and real tensors is refused.
    """
    model = check_model_and_inputs(model, example_inputs, allow_meta=True)
    exclude = check_selection(model, exclude, "exclude")
    check_bool(protect_outputs, "protect_outputs")
    check_bool(residual, "residual")
    check_number(timeout_s, "timeout_s", strictly_positive=True, allow_none=True)
    if on_unsupported not in ("skip", "error"):
        raise InputError(f"on_unsupported must be 'skip' or 'error', got {on_unsupported!r}")
    registry = default_registry(handlers)  # checked before the capture, which takes seconds
    program, seconds = capture(model, example_inputs, timeout_s=timeout_s)
    prop = Propagator(
        program,
        registry,
        on_unsupported=on_unsupported,
        protect_outputs=protect_outputs,
        residual=residual,
    )
    prop.run()
    # tied weights: every name of one tensor shares its spaces
    by_id: dict[int, list[str]] = {}
    for name, t in [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]:
        by_id.setdefault(id(t), []).append(name)
    _add_training_graph(model, example_inputs, prop, by_id, timeout_s)
    norm_sites = settle_norm_sites(model, prop) if residual else []
    table = prop.table
    for names in by_id.values():
        known = [n for n in names if n in prop.param_slots or n in prop.buffer_slots]
        for other in known[1:]:
            a = prop.param_slots.get(known[0]) or prop.buffer_slots.get(known[0]) or []
            b = prop.param_slots.get(other) or prop.buffer_slots.get(other) or []
            for x, y in zip(a, b, strict=False):
                table.unify(x, y)
    # a tensor no name of which the graph reads keeps its size
    for name in _never_read(model, prop, by_id):
        for s in prop.param_slots.get(name) or prop.buffer_slots.get(name) or []:
            table.taint(s, "not read by the captured graph")
    slot_spaces: dict[tuple[str, int], Space] = {}
    for name, desc in prop.param_slots.items():
        for d, s in enumerate(desc):
            slot_spaces[(name, d)] = s
    for name, desc in prop.buffer_slots.items():
        for d, s in enumerate(desc):
            slot_spaces[(name, d)] = s

    # exclusions: every dimension of an excluded module's parameters keeps its size
    if exclude:
        for (name, _d), s in slot_spaces.items():
            module = name.rsplit(".", 1)[0] if "." in name else ""
            if match_names(exclude, module) or match_names(exclude, name):
                table.taint(s, "excluded by the user")
    # one group per leaf space that a parameter holds; buffers (running statistics) follow
    groups = _collect_groups(prop, table, slot_spaces, set(prop.buffer_slots))
    block_kinds: dict[str, str] = {}
    blocks = _removable_blocks(model, program, prop, block_kinds)
    return Graph(
        model_name=type(model).__name__,
        groups=groups,
        skipped=prop.skipped,
        capture_seconds=seconds,
        n_nodes=len(program.graph.nodes),
        blocks=blocks,
        block_kinds=block_kinds,
        table=table,
        slot_spaces=slot_spaces,
        shape_sites=prop.shape_sites,
        groups_sites=prop.groups_sites,
        buffers=set(prop.buffer_slots),
        output_shapes=_output_shapes(program),
        protect_outputs=protect_outputs,
        residual=residual,
        norm_sites=norm_sites,
    )


def _never_read(model: nn.Module, prop: Propagator, by_id: Mapping[int, list[str]]) -> list[str]:
    """The parameters and buffers no name of which the captured graphs read (the second
    name of a tied weight is never read, but its first is)."""
    read = {n for n in [*prop.param_slots, *prop.buffer_slots] if n not in prop.unread}
    return [
        name
        for name in prop.unread
        if not any(other in read for other in by_id.get(id(_tensor(model, name)), []))
    ]


def _add_training_graph(
    model: nn.Module,
    example_inputs: Any,
    prop: Propagator,
    by_id: Mapping[int, list[str]],
    timeout_s: float | None,
) -> None:
    """Walk the training-mode forward too when eval mode leaves parameters unread.

    Auxiliary heads (GoogLeNet's, Inception v3's) run only in training mode: they read
    channels the eval graph prunes, so a pruned copy would fail to train. Their graph is
    walked into the same spaces, so what they read is pruned with its producer. A model
    whose training-mode forward cannot be captured keeps the eval analysis, with a warning.
    """
    unread = [name for name in _never_read(model, prop, by_id) if name in prop.param_slots]
    if not unread:
        return
    try:
        program, _ = capture(model, example_inputs, timeout_s=timeout_s, training=True)
    except NetsculptError as exc:
        warnings.warn(
            f"netsculpt could not capture {type(model).__name__} in training mode ({exc}); "
            f"parameters its eval-mode forward never reads ({', '.join(unread[:4])}"
            f"{', ...' if len(unread) > 4 else ''}) keep their size, and modules only "
            f"training mode runs may not fit the pruned widths: exclude them, or switch them "
            f"off before pruning",
            stacklevel=3,
        )
        return
    prop.add_program(program)


_IDENTITY_OPS = {
    f"aten::{op}" for op in ("dropout", "clone", "contiguous", "alias", "to", "_to_copy", "detach")
}
_ADD_OPS = {"aten::add", "aten::add_"}


def _removable_blocks(
    model: nn.Module,
    program: torch.export.ExportedProgram,
    prop: Propagator,
    kinds: dict[str, str],
) -> list[str]:
    """Modules that can be removed whole.

    A *branch* (an attention or feed-forward sub-layer) whose only output is added to a
    residual stream is replaced by zeros; a *block* whose output has its input's shape and
    that adds its input back inside is replaced by the identity. Only modules holding at
    least two parametrised layers count, so single linear layers are not offered.
    """
    stacks: dict[str, list[str]] = {}
    for node in program.graph.nodes:
        if node.op == "call_function":
            stacks[node.name] = prop.module_stack(node)
    inside: dict[str, set[str]] = {}
    for name, stack in stacks.items():
        for path in stack:
            if path:
                inside.setdefault(path, set()).add(name)
    params_inside = set(prop.param_nodes)
    out: list[str] = []
    for path, names in inside.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
        if len(layers) < 2:
            continue
        nodes = [n for n in program.graph.nodes if n.name in names]
        outputs = [n for n in nodes if any(u.name not in names for u in n.users)]
        outputs = [n for n in outputs if isinstance(n.meta.get("val"), torch.Tensor)]
        if len(outputs) != 1:
            continue
        result = outputs[0]
        inputs = []
        for n in nodes:
            for a in n.args:
                if (
                    isinstance(a, torch.fx.Node)
                    and a.name not in names
                    and a.name not in params_inside
                    and a.op != "get_attr"
                    and isinstance(a.meta.get("val"), torch.Tensor)
                ):
                    inputs.append(a)
        if not inputs:
            continue
        shape = tuple(result.meta["val"].shape)
        users = [u for u in result.users if u.name not in names]

        def skip_identity(u: torch.fx.Node) -> list[torch.fx.Node]:
            if op_name(u.target) in _IDENTITY_OPS:
                return [w for v in u.users for w in skip_identity(v)]
            return [u]

        final_users = [w for u in users for w in skip_identity(u)]
        if (
            final_users
            and all(op_name(u.target) in _ADD_OPS for u in final_users)
            and tuple(inputs[0].meta["val"].shape) == shape
        ):
            out.append(path)
            kinds[path] = "zeros"
            continue
        first = inputs[0]
        if tuple(first.meta["val"].shape) == shape and any(
            op_name(n.target) in _ADD_OPS and first in n.args for n in nodes
        ):
            out.append(path)
            kinds[path] = "identity"

    # graph order of each block's first node, outer blocks before the blocks they hold,
    # then the name: never the iteration order of a set of strings, which changes with
    # PYTHONHASHSEED (and with it the search signature and the default study name)
    def first_node(path: str) -> tuple[int, int, str]:
        start = min((prop.node_order.get(n, 1 << 30) for n in inside[path]), default=1 << 30)
        return (start, path.count("."), path)

    return sorted(set(out), key=first_node)


def _output_shapes(program: torch.export.ExportedProgram) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    for node in program.graph.nodes:
        if node.op == "output":
            leaves, _ = torch.utils._pytree.tree_flatten(node.args[0])
            for leaf in leaves:
                val = leaf.meta.get("val") if hasattr(leaf, "meta") else None
                if isinstance(val, torch.Tensor):
                    out.append(tuple(static_size(s) for s in val.shape))
    return out


def _collect_groups(
    prop: Propagator,
    table: SpaceTable,
    slot_spaces: dict[tuple[str, int], Space],
    buffers: set[str],
) -> list[Group]:
    # leaf uid -> [(slot, stride)]
    occurrences: dict[int, list[tuple[Slot, int]]] = {}
    leaves: dict[int, Space] = {}
    param_ndim: dict[str, int] = {}
    for name, dim in slot_spaces:
        param_ndim[name] = max(param_ndim.get(name, 0), dim + 1)
    for (name, dim), space in slot_spaces.items():
        for uid, (leaf, _arr) in table.index_map(space).items():
            if leaf.size <= 1:
                continue
            leaves[uid] = leaf
            stride = table.stride_of(space, uid)
            occurrences.setdefault(uid, []).append((Slot(name, dim, name in buffers), stride))

    multiple: dict[int, int] = {}
    for space, m in prop.alignments:
        for uid in table.index_map(space):
            multiple[uid] = math.lcm(multiple.get(uid, 1), m)
    groups: list[Group] = []
    used_names: set[str] = set()
    order = {name: i for i, name in enumerate(prop.param_slots)}
    for uid, occ in occurrences.items():
        leaf = table.find(leaves[uid])
        params = [s for s, _ in occ if not s.is_buffer]
        if not params:
            continue
        # the producer: the first weight whose output dimension holds the group
        producers = [(s, st) for s, st in occ if (s.tensor, s.dim) in prop.output_slots]
        if not producers:
            producers = [
                (s, st)
                for s, st in occ
                if not s.is_buffer and s.dim == 0 and param_ndim.get(s.tensor, 0) >= 2
            ]
        if not producers:
            if leaf.taint:
                continue  # e.g. kernel dimensions, head dimensions: not a group
            producers = [(s, st) for s, st in occ if not s.is_buffer]
        producers.sort(key=lambda x: order.get(x[0].tensor, 1 << 30))
        prod_slot, _ = producers[0]
        if leaf.taint and (
            any(w in leaf.taint for w in ("kernel", "embedding table", "inner factor", "head dim"))
            or min(st for _, st in occ) > 1
        ):
            continue
        module = prod_slot.tensor.rsplit(".", 1)[0] if "." in prod_slot.tensor else ""
        # a table with one column per head (T5's relative position bias) has stride 1:
        # a head's width is read off the projections, whose strides are the head size
        weight_strides = [
            st for s, st in occ if not s.is_buffer and param_ndim.get(s.tensor, 0) >= 2
        ]
        if any(st > 1 for st in weight_strides):
            weight_strides = [st for st in weight_strides if st > 1]
        max_stride = max(weight_strides, default=1)
        min_stride = min(weight_strides, default=1)
        # experts' stacked weights are 3-D too: their neuron groups carry an alignment
        is_conv = any(param_ndim.get(s.tensor, 0) >= 3 for s, _ in occ) and uid not in multiple
        if max_stride > 1 and not is_conv:
            kind = "heads"
            name = module.rsplit(".", 1)[0] if "." in module else module
        else:
            kind = "channels" if is_conv else "neurons"
            name = module
        note = ""
        if kind == "heads" and max_stride != min_stride and min_stride:
            # GQA: a unit is a key/value group spanning several query heads
            note = (
                f"grouped-query attention: each unit is one key/value head with "
                f"{max_stride // min_stride} query heads"
            )
        base = name or "<top>"
        name = base
        k = 2
        while name in used_names:
            name = f"{base}#{k}"
            k += 1
        used_names.add(name)
        tensors = tuple(dict.fromkeys(s.tensor for s, _ in occ if not s.is_buffer))
        groups.append(
            Group(
                name=name,
                kind=kind,
                size=leaf.size,
                prunable=not leaf.taint,
                reason=leaf.taint,
                stage=_stage_of(module),
                module=module,
                params=tensors,
                slots=tuple(s for s, _ in occ),
                unit_width=min_stride if kind == "heads" else 1,
                note=note,
                uid=uid,
                multiple=multiple.get(uid, 1),
            )
        )
    groups.sort(key=lambda g: order.get(g.params[0], 1 << 30) if g.params else 1 << 30)
    return groups


def _tensor(model: nn.Module, name: str) -> Any:
    """The parameter or buffer ``name`` of ``model`` (None when it has none of that name)."""
    module, _, attr = name.rpartition(".")
    try:
        return getattr(model.get_submodule(module), attr, None)
    except AttributeError:
        return None


def _stage_of(module: str) -> str:
    """Module-path prefix before the first numeric component: "layer1.0.conv1" -> "layer1"."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i]) or parts[0]
    return ".".join(parts[:-1]) if len(parts) > 1 else module
