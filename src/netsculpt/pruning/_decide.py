"""Deciding which units go: ratios per group, importance scores, rounding, ranking.

The first of the planner's three steps (decide, :mod:`netsculpt.pruning._build`,
:mod:`netsculpt.pruning._verify`). It reads the model and the graph and returns, per
prunable group, a mask of the units kept, and the blocks removed whole.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, run_hooked
from netsculpt.errors import InputError, NothingToPruneError
from netsculpt.graph._arguments import match_names
from netsculpt.graph.analysis import Graph, Group
from netsculpt.pruning._per_expert import expert_groups, kept_per_expert
from netsculpt.pruning.config import PruneConfig, check_ratio
from netsculpt.pruning.importance import ImportanceContext, criterion_info, get_importance

__all__ = ["Decision", "decide", "granularity"]


@dataclass(frozen=True)
class Decision:
    """What the planner decided, before any tensor is sliced.

    Attributes:
        groups: the prunable groups not excluded, in graph order.
        keep: group uid -> boolean mask of the units kept (every group in ``groups``).
        removed: ``(module, kind)`` of the blocks removed whole (``"zeros:2"``, ...).
        global_ranking: whether units were ranked across groups.
        per_expert: group uid -> ``[experts, units]`` mask of the units each expert keeps,
            for the neurons of stacked expert weights (:mod:`netsculpt.pruning._per_expert`);
            ``keep`` still says how many.
    """

    groups: tuple[Group, ...]
    keep: Mapping[int, np.ndarray]
    removed: tuple[tuple[str, str], ...]
    global_ranking: bool
    per_expert: Mapping[int, np.ndarray] = field(default_factory=dict)


def decide(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    config: PruneConfig,
    *,
    calib: Sequence[ExampleInputs] | None,
    loss_fn: Callable[[Any, ExampleInputs], torch.Tensor] | None,
) -> Decision:
    """Score every unit of the groups ``config.ratio`` touches and keep the best.

    Raises:
        NothingToPruneError: no prunable group, or settings that remove nothing.
        InputError: a ratio key that matches no group, a criterion returning bad scores.
    """
    exclude = config.exclude
    groups = [g for g in graph.prunable_groups if not (exclude and _touches(g, exclude))]
    removed = _removed_blocks(model, example_inputs, graph, config.remove_blocks)
    if not groups and not removed:
        reasons = sorted({g.reason for g in graph.groups if g.reason})[:3]
        raise NothingToPruneError(
            f"model {graph.model_name} has no prunable group"
            + (f" (protected because: {'; '.join(reasons)})" if reasons else "")
            + "; check PruneConfig(exclude=...), pass PruneConfig(protect_outputs=False) to "
            "allow output widths to change, or see ns.analyze(model, inputs).summary()"
        )
    ratios = _resolve_ratios(config.ratio, groups)
    global_ranking = config.global_ranking
    if global_ranking is None:
        global_ranking = criterion_info(config.importance).ranks_globally
    round_to = config.round_to
    active = [g for g in groups if ratios[g.name] > 0]
    _check_round_to(active, round_to)
    ctx = ImportanceContext(
        model=model, graph=graph, calib=calib, loss_fn=loss_fn, seed=config.seed
    )
    scores = _scores(config.importance, active, ctx)
    keep_counts = _keep_counts(active, ratios, scores, round_to, global_ranking)
    if (
        not isinstance(config.ratio, Mapping)
        and active
        and not removed
        and all(keep_counts[g.name] >= g.size for g in active)
    ):
        raise NothingToPruneError(_too_small(config.ratio, active, round_to))
    keep: dict[int, np.ndarray] = {}
    for g in groups:
        mask = np.ones(g.size, dtype=bool)
        if g.name in keep_counts:
            order = np.argsort(-scores[g.name], kind="stable")
            mask[:] = False
            mask[order[: keep_counts[g.name]]] = True
        keep[g.uid] = mask
    experts = expert_groups(model, graph, active)
    per_expert = kept_per_expert(
        get_importance(config.importance), config.importance, active, keep_counts, experts, ctx
    )
    return Decision(tuple(groups), keep, tuple(removed), global_ranking, per_expert)


def _scores(
    importance: str, groups: Sequence[Group], ctx: ImportanceContext
) -> dict[str, np.ndarray]:
    """One finite score per unit of every group, from the registered criterion."""
    score_fn = get_importance(importance)
    scores = {g.name: np.asarray(score_fn(g, ctx), dtype=np.float64) for g in groups}
    for g in groups:
        if scores[g.name].shape != (g.size,):
            raise InputError(
                f"importance {importance!r} returned scores of shape {scores[g.name].shape} "
                f"for group {g.name!r} of {g.size} units; return one score per unit"
            )
        if not np.isfinite(scores[g.name]).all():
            raise InputError(
                f"importance {importance!r} returned NaN or infinite scores for group "
                f"{g.name!r}; with 'taylor' this means the loss on the calibration batches is "
                f"NaN or infinite (check loss_fn and calib), with your own criterion return "
                f"finite numbers"
            )
    return scores


def _resolve_ratios(
    ratio: float | Mapping[str, float], groups: Sequence[Group]
) -> dict[str, float]:
    if not isinstance(ratio, Mapping):
        r = check_ratio(ratio, "ratio")
        return {g.name: r for g in groups}
    default = check_ratio(ratio["*"], "ratio['*']") if "*" in ratio else 0.0
    out = {g.name: default for g in groups}
    for key, value in ratio.items():
        if key == "*":
            continue
        r = check_ratio(value, f"ratio[{key!r}]")
        hits = [g for g in groups if match_names([key], g.name) or match_names([key], g.module)]
        if not hits:
            names = ", ".join(g.name for g in groups[:6])
            close = difflib.get_close_matches(key, [g.name for g in groups], n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise InputError(
                f"ratio key {key!r} matches no prunable group; {hint}group names look like "
                f"{names}{', ...' if len(groups) > 6 else ''} (ns.analyze lists them all); "
                f"use an exact name or a 're:' pattern"
            )
        for g in hits:
            out[g.name] = r
    return out


def granularity(group: Group, round_to: int) -> int:
    """The fewest units of ``group`` that keep its width a multiple of ``round_to`` (and of
    the alignment a kernel needs, ``group.multiple``)."""
    m = 1 if round_to <= 1 else max(1, round_to // math.gcd(round_to, max(1, group.unit_width)))
    return math.lcm(m, max(1, group.multiple))


def _round_keep(keep: int, size: int, m: int) -> int:
    if m <= 1:
        return max(1, min(size, keep))
    if size <= m:
        return size
    k = round(keep / m) * m
    return max(m, min(k, size))


def _check_round_to(active: Sequence[Group], round_to: int) -> None:
    """Refuse a ``round_to`` that leaves every group it applies to whole."""
    if round_to <= 1 or not active:
        return
    if all(g.size <= granularity(g, round_to) for g in active):
        widest = max(active, key=lambda g: g.size)
        raise NothingToPruneError(
            f"round_to={round_to} exceeds the width of every group it applies to (the widest, "
            f"{widest.name!r}, has {widest.size} {widest.kind}), so no width can be rounded "
            f"below its full size and nothing would be pruned; pass round_to=1 or a divisor "
            f"smaller than {widest.size}, e.g. round_to={_largest_below(widest.size)}"
        )


def _largest_below(size: int) -> int:
    """The largest power of two below ``size`` (at least 1)."""
    return max(1, 1 << max(0, (size - 1).bit_length() - 1))


def _too_small(ratio: float, active: Sequence[Group], round_to: int) -> str:
    """Why a uniform ``ratio`` removes no unit, and the smallest ratio that would."""
    need = min(granularity(g, round_to) / g.size for g in active)
    suggestion = math.ceil(need * 1000) / 1000
    widths = sorted({g.size for g in active})
    span = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]} to {widths[-1]}"
    rounding = f", rounded to multiples of round_to={round_to}" if round_to > 1 else ""
    return (
        f"ratio={ratio:g} removes no unit from any of the {len(active)} prunable groups "
        f"(widths {span}{rounding}), so the plan would prune nothing; pass ratio>={suggestion:g}"
        + (" or a smaller round_to" if round_to > 1 else "")
        + ", or ratio=0.0 if an unchanged model is what you want"
    )


def _touches(group: Group, exclude: Sequence[str]) -> bool:
    """True when any tensor of ``group`` belongs to an excluded module."""
    for tensor in group.params:
        module = tensor.rsplit(".", 1)[0] if "." in tensor else ""
        if match_names(exclude, module) or match_names(exclude, tensor):
            return True
    return match_names(exclude, group.name)


def _removed_blocks(
    model: nn.Module, example_inputs: ExampleInputs, graph: Graph, names: Sequence[str]
) -> list[tuple[str, str]]:
    if not names:
        return []
    unknown = [n for n in names if n not in graph.block_kinds]
    if unknown:
        some = ", ".join(graph.blocks[:6]) or "none"
        raise InputError(
            f"remove_blocks names {unknown}, which are not removable blocks of "
            f"{graph.model_name}; removable ones: {some}{', ...' if len(graph.blocks) > 6 else ''}"
            f" (see ns.analyze(model, inputs).blocks)"
        )
    arity: dict[str, int] = {}
    hooks = []
    for name in names:

        def hook(module: nn.Module, args: Any, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor):
                arity[name] = 1
            elif isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                arity[name] = len(output)
            else:
                arity[name] = -1

        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    run_hooked(model, hooks, [example_inputs])
    out: list[tuple[str, str]] = []
    for name in names:
        if arity.get(name, -1) < 1:
            raise InputError(
                f"module {name!r} returns neither a tensor nor a tuple of tensors, so "
                f"netsculpt cannot stand in for it; remove a module inside it instead"
            )
        out.append((name, f"{graph.block_kinds[name]}:{arity[name]}"))
    return out


def _keep_counts(
    groups: Sequence[Group],
    ratios: Mapping[str, float],
    scores: Mapping[str, np.ndarray],
    round_to: int,
    global_ranking: bool,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not global_ranking:
        for g in groups:
            m = granularity(g, round_to)
            keep = g.size - math.floor(g.size * ratios[g.name] + 1e-9)
            counts[g.name] = _round_keep(keep, g.size, m)
        return counts
    # global: normalise within each group, remove the lowest units overall
    target = sum(math.floor(g.size * ratios[g.name] + 1e-9) for g in groups)
    entries: list[tuple[float, str]] = []
    for g in groups:
        s = scores[g.name]
        norm = s / max(float(s.sum()), 1e-30) * g.size
        entries.extend((float(v), g.name) for v in norm)
    entries.sort(key=lambda e: e[0])
    removed = {g.name: 0 for g in groups}
    limit = {g.name: g.size - max(1, granularity(g, round_to)) for g in groups}
    done = 0
    for _value, name in entries:
        if done >= target:
            break
        if removed[name] < limit[name]:
            removed[name] += 1
            done += 1
    for g in groups:
        counts[g.name] = _round_keep(g.size - removed[g.name], g.size, granularity(g, round_to))
    return counts
