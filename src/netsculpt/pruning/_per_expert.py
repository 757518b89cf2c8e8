"""Expert neurons chosen per expert in stacked-weight expert layers.

In a transformers 5.x expert layer every expert's MLP is a slice of stacked weights
(``gate_up_proj`` ``[E, 2I, H]``, ``down_proj`` ``[E, H, I]``), so the analysis sees one group
of ``I`` neurons shared by all experts: a stacked tensor cannot be ragged, every expert must
keep the same number. It need not keep the same *positions*: the planner decides how many
neurons the group keeps (its ratio, ranking and rounding, as for any group), then each
expert keeps its own best ones by the same criterion evaluated on that expert's slices
alone. The plan records the positions per expert as ``Plan.gathers``; the verifier zeroes
each expert's removed neurons, so the result is proved exact like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import nn

from netsculpt.errors import InputError, UnsupportedOperationError
from netsculpt.graph.analysis import Graph, Group
from netsculpt.pruning._experts import find_moe_blocks
from netsculpt.pruning.importance import ImportanceContext

__all__ = ["expert_groups", "expert_scores", "kept_per_expert", "per_expert_rows"]


def expert_groups(model: nn.Module, graph: Graph, groups: Sequence[Group]) -> dict[int, int]:
    """Group uid -> number of experts, for the groups made only of the neurons of one expert
    layer's stacked weights (never their expert dimension, nothing shared with other layers)."""
    try:
        blocks = find_moe_blocks(model)
    except UnsupportedOperationError:
        return {}  # an expert layer netsculpt cannot follow: its neurons stay shared
    owner = {t: b for b in blocks if not b.in_list for t in b.expert_tensors}
    out: dict[int, int] = {}
    for g in groups:
        slots = g.slots
        if not slots or any(s.is_buffer or s.dim == 0 or s.tensor not in owner for s in slots):
            continue
        if len({owner[s.tensor].path for s in slots}) != 1:
            continue
        if any(set(graph.index_map(s.tensor, s.dim)) != {g.uid} for s in slots):
            continue
        out[g.uid] = owner[slots[0].tensor].num_experts
    return out


def _expert_view(ctx: ImportanceContext, tensors: set[str], e: int) -> ImportanceContext:
    """``ctx`` as expert ``e`` alone sees it: its slice of every stacked tensor (and of their
    gradients); a different seed, so that random scores differ between experts."""
    grads = ctx.grads
    if grads is not None:
        grads = {**grads, **{n: grads[n][e : e + 1] for n in tensors if n in grads}}
    view = ImportanceContext(
        model=ctx.model,
        graph=ctx.graph,
        calib=ctx.calib,
        loss_fn=ctx.loss_fn,
        seed=ctx.seed + 7919 * (e + 1),
        grads=grads,
        activations=ctx.activations,
    )
    view._tensors.update({n: ctx.tensor(n)[e : e + 1] for n in tensors})
    return view


def expert_scores(
    score_fn: Callable[[Group, ImportanceContext], np.ndarray],
    importance: str,
    group: Group,
    n: int,
    ctx: ImportanceContext,
) -> np.ndarray:
    """``[n, units]``: the scores of ``group``'s units in each of its ``n`` experts, each
    from that expert's own slices."""
    tensors = {s.tensor for s in group.slots}
    out = np.empty((n, group.size))
    for e in range(n):
        scores = np.asarray(score_fn(group, _expert_view(ctx, tensors, e)), dtype=np.float64)
        if scores.shape != (group.size,) or not np.isfinite(scores).all():
            raise InputError(
                f"importance {importance!r} returned {scores.shape} scores (or NaN) for "
                f"expert {e} of group {group.name!r} of {group.size} units; return one finite "
                f"score per unit"
            )
        out[e] = scores
    return out


def kept_per_expert(
    score_fn: Callable[[Group, ImportanceContext], np.ndarray],
    importance: str,
    groups: Sequence[Group],
    counts: Mapping[str, int],
    experts: Mapping[int, int],
    ctx: ImportanceContext,
) -> dict[int, np.ndarray]:
    """Group uid -> ``[experts, units]`` mask: each expert keeps ``counts[group]`` units, its
    own best by ``score_fn`` on its own slices. Only groups of ``experts`` that lose units."""
    out: dict[int, np.ndarray] = {}
    for g in groups:
        n = experts.get(g.uid)
        k = counts.get(g.name, g.size)
        if n is None or k >= g.size:
            continue
        scores = expert_scores(score_fn, importance, g, n, ctx)
        mask = np.zeros((n, g.size), dtype=bool)
        for e in range(n):
            mask[e, np.argsort(-scores[e], kind="stable")[:k]] = True
        out[g.uid] = mask
    return out


def per_expert_rows(graph: Graph, group: Group, mask: np.ndarray) -> list[tuple[str, int, tuple]]:
    """``(tensor, dim, positions kept per expert)`` for every slot of ``group``."""
    out = []
    for s in group.slots:
        _leaf, arr = graph.index_map(s.tensor, s.dim)[group.uid]
        present = arr >= 0
        rows = []
        for e in range(mask.shape[0]):
            kept = np.ones(arr.shape[0], dtype=bool)
            kept[present] = mask[e][arr[present]]
            rows.append(tuple(int(i) for i in np.nonzero(kept)[0]))
        out.append((s.tensor, s.dim, tuple(rows)))
    return out
