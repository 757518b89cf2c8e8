"""Building a :class:`~netsculpt.pruning.plan.Plan` from the kept-unit masks.

The second of the planner's three steps (:mod:`netsculpt.pruning._decide`, build,
:mod:`netsculpt.pruning._verify`): every parameter and buffer dimension a decided group
reaches is sliced to the positions its units keep, and the module attributes that must
follow (a grouped layer's ``groups``, a head count used in a reshape) are found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt.graph.analysis import Graph, Group
from netsculpt.graph.propagate import ShapeSite
from netsculpt.graph.spaces import Space
from netsculpt.pruning._per_expert import per_expert_rows
from netsculpt.pruning._rewrite import SliceRewrite, current_bounds
from netsculpt.pruning.plan import NOT_SIZE_ATTRIBUTE, SIZE_ATTRIBUTE, GroupDecision, Plan

__all__ = ["Built", "build", "in_shape_sites", "kept_positions"]

#: a module attribute set by a plan: (module, attribute, new value)
Attr = tuple[str, str, Any]


@dataclass(frozen=True)
class Built:
    """A plan and what verification may still need to add or relax.

    Attributes:
        plan: the plan, with the attribute updates every grouped layer needs.
        shape_attrs: size attributes that may have produced a literal size in the module
            code (a head count in a reshape); verification keeps those the model needs.
        unresolved: groups inside a literal size no attribute explains.
    """

    plan: Plan
    shape_attrs: tuple[Attr, ...] = ()
    unresolved: frozenset[int] = field(default_factory=frozenset)


def build(
    model: nn.Module,
    graph: Graph,
    groups: Sequence[Group],
    keep: Mapping[int, np.ndarray],
    removed: Sequence[tuple[str, str]],
    meta: Mapping[str, Any],
    per_expert: Mapping[int, np.ndarray] | None = None,
) -> Built:
    """The plan that keeps the units ``keep`` marks and removes the blocks ``removed``;
    the groups in ``per_expert`` keep, in each expert, the units its row marks."""
    decided = [
        GroupDecision(g.name, g.kind, g.size, tuple(int(i) for i in np.nonzero(keep[g.uid])[0]))
        for g in groups
    ]
    tensors, shapes = _slice_tensors(model, graph, keep)
    gathers = []
    for g in groups:
        mask = (per_expert or {}).get(g.uid)
        if mask is None or keep[g.uid].all():
            continue
        for tensor, dim, rows in per_expert_rows(graph, g, mask):
            gathers.append((tensor, dim, 0, rows))
            tensors.get(tensor, {}).pop(dim, None)
    tensors = {name: dims for name, dims in tensors.items() if dims}
    group_attrs, shape_attrs, unresolved, slices = _attribute_updates(model, graph, keep)
    plan = Plan(
        tensors=tensors,
        shapes=shapes,
        attrs=tuple(group_attrs),
        groups=tuple(decided),
        removed=tuple(removed),
        meta=dict(meta),
        norms=tuple(_resized_norms(graph, keep)),
        slices=tuple(slices),
        gathers=tuple(gathers),
    )
    return Built(plan, tuple(shape_attrs), frozenset(unresolved))


def in_shape_sites(graph: Graph, keep: Mapping[int, np.ndarray]) -> set[int]:
    """Groups inside any literal size of a reshape, expand or split."""
    out: set[int] = set()
    for site in graph.shape_sites:
        for uid in graph.table.index_map(site.space):
            if uid in keep:
                out.add(uid)
    return out


def _mask_of(
    imap: Mapping[int, tuple[Any, np.ndarray]], keep: Mapping[int, np.ndarray]
) -> np.ndarray | None:
    """Kept positions of a dimension from its index map; None when nothing there is removed."""
    mask: np.ndarray | None = None
    for uid, (_leaf, arr) in imap.items():
        kept = keep.get(uid)
        if kept is None or kept.all():
            continue
        ok = np.ones(arr.shape[0], dtype=bool)
        present = arr >= 0
        ok[present] = kept[arr[present]]
        mask = ok if mask is None else (mask & ok)
    return mask


def kept_positions(
    graph: Graph, tensor: str, dim: int, keep: Mapping[int, np.ndarray]
) -> np.ndarray | None:
    """The positions of ``tensor`` along ``dim`` that survive (None: all of them)."""
    return _mask_of(graph.index_map(tensor, dim), keep)


def _slice_tensors(
    model: nn.Module, graph: Graph, keep: Mapping[int, np.ndarray]
) -> tuple[dict[str, dict[int, tuple[int, ...]]], dict[str, tuple[int, ...]]]:
    tensors: dict[str, dict[int, tuple[int, ...]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, tuple[int, ...]] = {}
    for name, t in [
        *model.named_parameters(remove_duplicate=False),  # every name of a tied weight
        *model.named_buffers(remove_duplicate=False),
    ]:
        sizes[name] = tuple(t.shape)
    for tensor, dim in graph.slot_spaces:
        mask = kept_positions(graph, tensor, dim, keep)
        if mask is None or mask.all():
            continue
        tensors.setdefault(tensor, {})[dim] = tuple(int(i) for i in np.nonzero(mask)[0])
        shapes[tensor] = sizes.get(tensor, ())
    return tensors, shapes


def _resized_norms(graph: Graph, keep: Mapping[int, np.ndarray]) -> list[tuple[str, int, int]]:
    """``(module, width before, width after)`` of every norm over a pruned residual width."""
    out: dict[str, tuple[str, int, int]] = {}
    for site in graph.norm_sites:
        if site.reason or site.module in out:
            continue
        before = graph.table.find(site.space).size
        after = _space_kept(graph, site.space, keep)
        if after < before:
            out[site.module] = (site.module, before, after)
    return list(out.values())


def _space_kept(graph: Graph, space: Space, keep: Mapping[int, np.ndarray]) -> int:
    mask = _mask_of(graph.table.index_map(space), keep)
    return graph.table.find(space).size if mask is None else int(mask.sum())


def _sizes_itself(module: nn.Module, literal: int) -> bool:
    """Whether ``literal`` is a width of a layer whose size attributes follow its weight
    when a plan is applied: transformers' ``Conv1D`` views its input to ``x.size(-1)`` and
    its output to ``nf``, which the capture writes down as literals."""
    weight = getattr(module, "weight", None)
    if type(module).__name__ != "Conv1D" or not isinstance(weight, torch.Tensor):
        return False
    return weight.ndim == 2 and literal in (int(weight.shape[0]), int(weight.shape[1]))


def _attribute_updates(
    model: nn.Module, graph: Graph, keep: Mapping[int, np.ndarray]
) -> tuple[list[Attr], list[Attr], set[int], list[SliceRewrite]]:
    """Group-count updates (always needed), candidate size updates, unexplained groups,
    literal slice bounds to rewrite."""
    group_attrs: list[Attr] = []
    for groups_site in graph.groups_sites:
        new = _space_kept(graph, groups_site.space, keep)
        if new != graph.table.find(groups_site.space).size:
            group_attrs.append((groups_site.module, groups_site.attr, new))
    # literal sizes in reshapes and splits: module attributes that may have produced them
    candidates: dict[tuple[str, str], Any] = {}
    conflicts: set[tuple[str, str]] = set()
    unresolved: set[int] = set()
    slices: dict[tuple[str, int, int, int], SliceRewrite] = {}
    for site in graph.shape_sites:
        old = site.literal
        if graph.table.find(site.space).size != old:
            continue
        new = _space_kept(graph, site.space, keep)
        if new == old:
            continue
        # the innermost module holding a matching attribute is the one that made the literal
        for path in reversed(site.module_stack[-3:]):
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            if path == site.module_stack[-1] and _sizes_itself(module, old):
                break  # a literal in a layer's own code that apply() sizes from its weight
            found = False
            for attr, value in vars(module).items():
                if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
                    continue
                # the same names a plan is allowed to set (netsculpt.pruning.plan)
                if value != old or not SIZE_ATTRIBUTE.search(attr):
                    continue
                if NOT_SIZE_ATTRIBUTE.search(attr):
                    continue
                key = (path, attr)
                if key in candidates and candidates[key] != new:
                    conflicts.add(key)
                candidates[key] = new
                found = True
            if found:
                break
        else:
            rewrite = _slice_rewrite(model, graph, site, keep, new)
            if rewrite is None:
                unresolved.update(uid for uid in graph.table.index_map(site.space) if uid in keep)
            else:
                slices[rewrite[:4]] = rewrite
    shape_attrs = [(m, a, v) for (m, a), v in candidates.items() if (m, a) not in conflicts]
    return group_attrs, shape_attrs, unresolved, list(slices.values())


def _slice_rewrite(
    model: nn.Module, graph: Graph, site: ShapeSite, keep: Mapping[int, np.ndarray], new: int
) -> SliceRewrite | None:
    """The rewrite of a literal slice that takes a whole piece of a concatenation."""
    if site.cut is None or new <= 0:
        return None
    dim, start, end, prefix = site.cut
    path = site.module_stack[-1] if site.module_stack else ""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    new_start = 0 if prefix is None else _space_kept(graph, prefix, keep)
    start, end = current_bounds(module, dim, start, end)
    return (path, dim, start, end, new_start, new_start + new)
