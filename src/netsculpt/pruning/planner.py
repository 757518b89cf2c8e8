"""``ns.plan`` and ``ns.prune``: decide what to cut, by which importance."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_int, check_names
from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs
from netsculpt.errors import InputError, InvalidRatioError, NothingToPruneError, PlanError
from netsculpt.graph._arguments import (
    check_bool,
    check_model_and_inputs,
    check_selection,
    check_weights,
)
from netsculpt.graph.analysis import Graph, Group, analyze, match_names
from netsculpt.graph.spaces import Space
from netsculpt.pruning.apply import apply
from netsculpt.pruning.importance import ImportanceContext, check_calib, get_importance
from netsculpt.pruning.plan import GroupDecision, Plan

__all__ = ["plan", "prune"]

Ratio = float | Mapping[str, float]

_ATTR_NAME = re.compile(
    r"(head|size|dim|num|width|channel|feature|embed|split|inner|hidden)", re.IGNORECASE
)
_ATTR_SKIP = re.compile(
    r"(idx|index|layer_id|layer_num|seed|vocab|max_position|position)", re.IGNORECASE
)


def _check_ratio(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (0 <= value < 1)
    ):
        raise InvalidRatioError(
            f"{where} must be a number in [0, 1) (the fraction of width removed), got "
            f"{value!r}; for example ratio=0.3 removes 30% of every prunable group"
        )
    return float(value)


def _check_ratio_argument(ratio: Any) -> None:
    """A number in [0, 1), or a mapping from group names (strings) to such numbers."""
    if not isinstance(ratio, Mapping):
        _check_ratio(ratio, "ratio")
        return
    for key, value in ratio.items():
        if not isinstance(key, str):
            raise InputError(
                f"ratio keys must be group names or 're:' patterns (strings), got {key!r} "
                f"({type(key).__name__}); e.g. ratio={{'layer1': 0.5, '*': 0.3}}"
            )
        _check_ratio(value, f"ratio[{key!r}]")


def _resolve_ratios(ratio: Ratio, groups: Sequence[Group]) -> dict[str, float]:
    if not isinstance(ratio, Mapping):
        r = _check_ratio(ratio, "ratio")
        return {g.name: r for g in groups}
    default = _check_ratio(ratio["*"], "ratio['*']") if "*" in ratio else 0.0
    out = {g.name: default for g in groups}
    for key, value in ratio.items():
        if key == "*":
            continue
        r = _check_ratio(value, f"ratio[{key!r}]")
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


def _granularity(group: Group, round_to: int) -> int:
    if round_to <= 1:
        return 1
    return max(1, round_to // math.gcd(round_to, max(1, group.unit_width)))


def _round_keep(keep: int, size: int, m: int) -> int:
    if m <= 1:
        return max(1, min(size, keep))
    if size <= m:
        return size
    k = round(keep / m) * m
    return max(m, min(k, size))


def plan(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    ratio: Ratio = 0.3,
    importance: str | Callable[..., np.ndarray] = "magnitude",
    exclude: Sequence[str] = (),
    round_to: int = 1,
    calib: Sequence[ExampleInputs] | None = None,
    loss_fn: Callable[[Any, ExampleInputs], torch.Tensor] | None = None,
    global_ranking: bool | None = None,
    protect_outputs: bool = True,
    graph: Graph | None = None,
    remove_blocks: Sequence[str] = (),
    seed: int = 0,
    verify: bool = True,
) -> Plan:
    """Decide which channels, neurons and heads to remove.

    Args:
        model: the model to prune; it is not modified.
        example_inputs: a tensor, a tuple of tensors, or a dict of keyword inputs.
        ratio: fraction of each group's width removed, in [0, 1); or a mapping from group
            name (or ``"re:"`` pattern, or ``"*"`` for the rest) to a ratio.
        importance: ``"magnitude"``, ``"l1"``, ``"taylor"``, ``"activation"``, ``"random"``,
            ``"lamp"``, a registered name, or a callable ``(group, context) -> scores``.
        exclude: module names or ``"re:"`` patterns that keep their size.
        round_to: keep widths at multiples of this (8, 16, 64 suit most kernels).
        calib: calibration batches for ``taylor`` and ``activation``.
        loss_fn: ``(outputs, batch) -> loss`` for ``taylor`` (default: mean squared output).
        global_ranking: rank units of all groups together (default: only for ``lamp``),
            so that groups get different ratios; the overall ratio is kept.
        protect_outputs: keep every model output's shape (default).
        graph: a graph from :func:`netsculpt.analyze`, to skip capturing again.
        remove_blocks: names from ``graph.blocks`` to remove whole (an attention or
            feed-forward sub-layer becomes zero; a residual block becomes the identity).
        seed: seed for ``random``.
        verify: run the pruned copy once on ``example_inputs`` and check its output shapes.

    ``ratio=0.0`` gives a plan that changes nothing. A ratio above zero that removes nothing
    is refused: a ``round_to`` at least as wide as every group it applies to, or a single
    ratio too small to remove one unit of any group. A mapping of ratios may leave every
    group whole after rounding (a search builds such plans and compares them).

    Raises:
        InputError: an argument of the wrong type or out of range, an ``exclude`` name that
            matches no module, a model with NaN or infinite weights, missing ``calib``.
        ExampleInputsError: example inputs or calibration batches that are not tensors,
            hold NaN/inf values or live on the meta device.
        NothingToPruneError: no prunable group, or settings that remove nothing (above).
        PlanError: the pruned copy does not compute what the original does.
    """
    exclude, remove_blocks, calib = _check_arguments(
        model,
        example_inputs,
        ratio=ratio,
        importance=importance,
        exclude=exclude,
        round_to=round_to,
        calib=calib,
        loss_fn=loss_fn,
        global_ranking=global_ranking,
        protect_outputs=protect_outputs,
        graph=graph,
        remove_blocks=remove_blocks,
        seed=seed,
        verify=verify,
    )
    return _plan(
        model,
        example_inputs,
        ratio=ratio,
        importance=importance,
        exclude=exclude,
        round_to=round_to,
        calib=calib,
        loss_fn=loss_fn,
        global_ranking=global_ranking,
        protect_outputs=protect_outputs,
        graph=graph,
        remove_blocks=remove_blocks,
        seed=seed,
        verify=verify,
    )


def _check_arguments(
    model: Any,
    example_inputs: Any,
    *,
    ratio: Any,
    importance: Any,
    exclude: Any,
    round_to: Any,
    calib: Any,
    loss_fn: Any,
    global_ranking: Any,
    protect_outputs: Any,
    graph: Any,
    remove_blocks: Any,
    seed: Any,
    verify: Any,
) -> tuple[list[str], list[str], Any]:
    """Validate the arguments of :func:`plan`; returns ``exclude``, ``remove_blocks`` and
    ``calib`` normalised (lists)."""
    check_model_and_inputs(model, example_inputs)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise InputError(f"round_to must be a positive integer (1, 8, 16, 64), got {round_to!r}")
    _check_ratio_argument(ratio)
    get_importance(importance)
    if graph is not None and not isinstance(graph, Graph):
        raise InputError(
            f"graph must be the result of ns.analyze(model, example_inputs) or None, got "
            f"{type(graph).__name__}"
        )
    group_names = tuple(g.name for g in graph.groups) if graph is not None else ()
    excluded = check_selection(model, exclude, "exclude", extra=group_names)
    blocks = check_names(remove_blocks, "remove_blocks")
    check_int(seed, "seed", minimum=0)
    check_bool(global_ranking, "global_ranking", allow_none=True)
    check_bool(protect_outputs, "protect_outputs")
    check_bool(verify, "verify")
    if loss_fn is not None and not callable(loss_fn):
        raise InputError(
            f"loss_fn must be a callable (outputs, batch) -> loss tensor, or None, got "
            f"{loss_fn!r} ({type(loss_fn).__name__})"
        )
    calib = check_calib(calib, importance)
    check_weights(model)
    return excluded, blocks, calib


def _plan(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    ratio: Ratio,
    importance: str | Callable[..., np.ndarray],
    exclude: Sequence[str],
    round_to: int,
    calib: Sequence[ExampleInputs] | None,
    loss_fn: Callable[[Any, ExampleInputs], torch.Tensor] | None,
    global_ranking: bool | None,
    protect_outputs: bool,
    graph: Graph | None,
    remove_blocks: Sequence[str],
    seed: int,
    verify: bool,
) -> Plan:
    """:func:`plan` on arguments already checked."""
    score_fn = get_importance(importance)
    if graph is None:
        graph = analyze(model, example_inputs, exclude=exclude, protect_outputs=protect_outputs)
    groups = [g for g in graph.prunable_groups if not (exclude and _touches(g, exclude))]
    removed = _removed_blocks(model, example_inputs, graph, remove_blocks)
    if not groups and not removed:
        reasons = sorted({g.reason for g in graph.groups if g.reason})[:3]
        raise NothingToPruneError(
            f"model {graph.model_name} has no prunable group"
            + (f" (protected because: {'; '.join(reasons)})" if reasons else "")
            + "; check exclude=..., pass protect_outputs=False to allow output widths to "
            "change, or see ns.analyze(model, inputs).summary()"
        )
    ratios = _resolve_ratios(ratio, groups)
    if global_ranking is None:
        global_ranking = importance == "lamp"
    ctx = ImportanceContext(model=model, graph=graph, calib=calib, loss_fn=loss_fn, seed=seed)
    active = [g for g in groups if ratios[g.name] > 0]
    _check_round_to(active, round_to)
    scores = {g.name: np.asarray(score_fn(g, ctx), dtype=np.float64) for g in active}
    for g in active:
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
    keep_counts = _keep_counts(active, ratios, scores, round_to, bool(global_ranking))
    if (
        not isinstance(ratio, Mapping)
        and active
        and not removed
        and all(keep_counts[g.name] >= g.size for g in active)
    ):
        raise NothingToPruneError(_too_small(ratio, active, round_to))

    decisions: dict[int, np.ndarray] = {}
    for g in groups:
        mask = np.ones(g.size, dtype=bool)
        if g.name in keep_counts:
            order = np.argsort(-scores[g.name], kind="stable")
            mask[:] = False
            mask[order[: keep_counts[g.name]]] = True
        decisions[g.uid] = mask
    meta = {
        "ratio": dict(ratio) if isinstance(ratio, Mapping) else ratio,
        "importance": (
            importance if isinstance(importance, str) else getattr(importance, "__name__", "custom")
        ),
        "round_to": round_to,
        "global_ranking": bool(global_ranking),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "exclude": list(exclude),
        "remove_blocks": [m for m, _ in removed],
    }
    result, shape_attrs, unresolved = _build(model, graph, groups, decisions, removed, meta)
    if not verify or result.is_identity:
        return result
    error = _verify(model, example_inputs, graph, decisions, result, shape_attrs)
    if isinstance(error, Plan):
        return error
    # the module code hard-codes sizes netsculpt could not trace to an attribute: keep the
    # groups behind those sizes whole (listed in plan.meta["kept_whole"]) and try again
    errors = [error]
    for keep_whole in (unresolved, _in_shape_sites(graph, decisions)):
        keep_whole = {uid for uid in keep_whole if not decisions.get(uid, np.ones(1, bool)).all()}
        if not keep_whole:
            continue
        relaxed = {
            uid: (np.ones_like(m) if uid in keep_whole else m) for uid, m in decisions.items()
        }
        names = [g.name for g in groups if g.uid in keep_whole]
        result, shape_attrs, _ = _build(
            model, graph, groups, relaxed, removed, {**meta, "kept_whole": names}
        )
        outcome = _verify(model, example_inputs, graph, relaxed, result, shape_attrs)
        if isinstance(outcome, Plan):
            return outcome
        errors.append(outcome)
    raise PlanError(
        f"the pruned {graph.model_name} does not run like the original ("
        + "; ".join(dict.fromkeys(errors))
        + "); its code probably hard-codes a size netsculpt removed: exclude the module "
        "named in the error with exclude=[...], or report the model to netsculpt"
    )


def _check_round_to(active: Sequence[Group], round_to: int) -> None:
    """Refuse a ``round_to`` that leaves every group it applies to whole."""
    if round_to <= 1 or not active:
        return
    if all(g.size <= _granularity(g, round_to) for g in active):
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
    need = min(_granularity(g, round_to) / g.size for g in active)
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


def _build(
    model: nn.Module,
    graph: Graph,
    groups: Sequence[Group],
    decisions: Mapping[int, np.ndarray],
    removed: Sequence[tuple[str, str]],
    meta: Mapping[str, Any],
) -> tuple[Plan, list[tuple[str, str, Any]], set[int]]:
    decided = [
        GroupDecision(
            g.name, g.kind, g.size, tuple(int(i) for i in np.nonzero(decisions[g.uid])[0])
        )
        for g in groups
    ]
    tensors, shapes = _slice_tensors(model, graph, decisions)
    group_attrs, shape_attrs, unresolved = _attribute_updates(model, graph, decisions)
    plan_ = Plan(
        tensors=tensors,
        shapes=shapes,
        attrs=tuple(group_attrs),
        groups=tuple(decided),
        removed=tuple(removed),
        meta=dict(meta),
    )
    return plan_, shape_attrs, unresolved


def _in_shape_sites(graph: Graph, decisions: Mapping[int, np.ndarray]) -> set[int]:
    """Groups inside any literal size of a reshape, expand or split."""
    out: set[int] = set()
    for site in graph.shape_sites:
        for uid in graph.table.index_map(site.space):
            if uid in decisions:
                out.add(uid)
    return out


def _removed_blocks(
    model: nn.Module, example_inputs: ExampleInputs, graph: Graph, names: Sequence[str]
) -> list[tuple[str, str]]:
    if not names:
        return []
    if isinstance(names, str):
        names = [names]
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
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
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
            m = _granularity(g, round_to)
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
    limit = {g.name: g.size - max(1, _granularity(g, round_to)) for g in groups}
    done = 0
    for _value, name in entries:
        if done >= target:
            break
        if removed[name] < limit[name]:
            removed[name] += 1
            done += 1
    for g in groups:
        counts[g.name] = _round_keep(g.size - removed[g.name], g.size, _granularity(g, round_to))
    return counts


def _mask_of(
    imap: Mapping[int, tuple[Any, np.ndarray]], decisions: Mapping[int, np.ndarray]
) -> np.ndarray | None:
    """Kept positions of a dimension from its index map; None when nothing there is removed."""
    mask: np.ndarray | None = None
    for uid, (_leaf, arr) in imap.items():
        keep = decisions.get(uid)
        if keep is None or keep.all():
            continue
        ok = np.ones(arr.shape[0], dtype=bool)
        present = arr >= 0
        ok[present] = keep[arr[present]]
        mask = ok if mask is None else (mask & ok)
    return mask


def _kept_positions(
    graph: Graph, tensor: str, dim: int, decisions: Mapping[int, np.ndarray]
) -> np.ndarray | None:
    return _mask_of(graph.index_map(tensor, dim), decisions)


def _slice_tensors(
    model: nn.Module, graph: Graph, decisions: Mapping[int, np.ndarray]
) -> tuple[dict[str, dict[int, tuple[int, ...]]], dict[str, tuple[int, ...]]]:
    tensors: dict[str, dict[int, tuple[int, ...]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, tuple[int, ...]] = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        sizes[name] = tuple(t.shape)
    for tensor, dim in graph.slot_spaces:
        mask = _kept_positions(graph, tensor, dim, decisions)
        if mask is None or mask.all():
            continue
        tensors.setdefault(tensor, {})[dim] = tuple(int(i) for i in np.nonzero(mask)[0])
        shapes[tensor] = sizes.get(tensor, ())
    return tensors, shapes


def _space_kept(graph: Graph, space: Space, decisions: Mapping[int, np.ndarray]) -> int:
    mask = _mask_of(graph.table.index_map(space), decisions)
    return graph.table.find(space).size if mask is None else int(mask.sum())


def _attribute_updates(
    model: nn.Module, graph: Graph, decisions: Mapping[int, np.ndarray]
) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any]], set[int]]:
    group_attrs: list[tuple[str, str, Any]] = []
    for groups_site in graph.groups_sites:
        new = _space_kept(graph, groups_site.space, decisions)
        if new != graph.table.find(groups_site.space).size:
            group_attrs.append((groups_site.module, groups_site.attr, new))
    # literal sizes in reshapes and splits: module attributes that may have produced them
    candidates: dict[tuple[str, str], Any] = {}
    conflicts: set[tuple[str, str]] = set()
    unresolved: set[int] = set()
    for site in graph.shape_sites:
        old = site.literal
        if graph.table.find(site.space).size != old:
            continue
        new = _space_kept(graph, site.space, decisions)
        if new == old:
            continue
        # the innermost module holding a matching attribute is the one that made the literal
        for path in reversed(site.module_stack[-3:]):
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            found = False
            for attr, value in vars(module).items():
                if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
                    continue
                if value != old or not _ATTR_NAME.search(attr) or _ATTR_SKIP.search(attr):
                    continue
                key = (path, attr)
                if key in candidates and candidates[key] != new:
                    conflicts.add(key)
                candidates[key] = new
                found = True
            if found:
                break
        else:
            unresolved.update(uid for uid in graph.table.index_map(site.space) if uid in decisions)
    shape_attrs = [(m, a, v) for (m, a), v in candidates.items() if (m, a) not in conflicts]
    return group_attrs, shape_attrs, unresolved


def _output_shapes(outputs: Any) -> list[tuple[int, ...]]:
    return sorted(tuple(t.shape) for t in flatten_outputs(outputs))


def _zeroed_reference(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    decisions: Mapping[int, np.ndarray],
    removed: Sequence[tuple[str, str]],
) -> list[torch.Tensor] | None:
    """Outputs of ``model`` with every unit the plan removes set to zero, in place and restored.

    Removing all-zero units must not change the outputs, so these are exactly what the
    pruned model has to produce. None when a removed block becomes the identity (zeroing
    weights cannot express that).
    """
    if any(kind.startswith("identity") for _m, kind in removed):
        return None
    params = dict(model.named_parameters(remove_duplicate=False))
    saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for tensor, dim in graph.slot_spaces:
                t = params.get(tensor)
                if t is None:
                    continue
                mask = _kept_positions(graph, tensor, dim, decisions)
                if mask is None or mask.all():
                    continue
                idx = torch.as_tensor(np.nonzero(~mask)[0], dtype=torch.long, device=t.device)
                saved.append((t, dim, idx, t.index_select(dim, idx).clone()))
                t.index_fill_(dim, idx, 0.0)
            for name, _kind in removed:
                for p in model.get_submodule(name).parameters():
                    all_idx = torch.arange(p.shape[0], device=p.device) if p.ndim else None
                    if all_idx is None:
                        continue
                    saved.append((p, 0, all_idx, p.detach().clone()))
                    p.zero_()
            return [
                o.detach().float().clone()
                for o in flatten_outputs(call_model(model, example_inputs))
            ]
    finally:
        with torch.no_grad():
            for target, dim, idx, values in reversed(saved):
                target.index_copy_(dim, idx, values)


def _check_finite_reference(model_name: str, reference: Sequence[torch.Tensor] | None) -> None:
    """Outputs to compare the pruned copy with must be finite, or no comparison means much."""
    for i, out in enumerate(reference or []):
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise PlanError(
                f"output {i} of {model_name} on example_inputs holds NaN or infinite values "
                f"(with the units the plan removes set to zero), so netsculpt cannot check "
                f"that the pruned copy computes the same; look for an overflow (float16 "
                f"activations, huge inputs) in the model, or pass verify=False to skip the check"
            )


def _max_difference(
    outs: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    *,
    shapes_must_match: bool = False,
) -> float | None:
    """The largest difference beyond tolerance between outputs and reference (None: match)."""
    for a, b in zip(outs, reference, strict=False):
        if a.shape != b.shape:
            if shapes_must_match:
                return float("inf")
            continue
        if not a.numel():
            continue
        diff = float((a - b).abs().max())
        if not diff <= 1e-3 * max(1.0, float(b.abs().max())):
            return diff
    return None


def _verify(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    decisions: Mapping[int, np.ndarray],
    result: Plan,
    shape_attrs: list[tuple[str, str, Any]],
) -> Plan | str:
    """Run the pruned copy and compare it with the original whose removed units are zero.

    Adds the attribute updates the module code needs (a head count used in a reshape, a
    split size), keeping only those that are necessary. Returns the verified plan, or the
    reason it failed.
    """
    was_training = model.training
    model.eval()
    try:
        reference = _zeroed_reference(model, example_inputs, graph, decisions, result.removed)
    finally:
        model.train(was_training)
    _check_finite_reference(graph.model_name, reference)
    expected = sorted(graph.output_shapes)
    errors: list[str] = []

    def with_attrs(attrs: Sequence[tuple[str, str, Any]]) -> Plan:
        return Plan(
            tensors=result.tensors,
            shapes=result.shapes,
            attrs=result.attrs + tuple(attrs),
            groups=result.groups,
            removed=result.removed,
            meta=result.meta,
        )

    def runs(candidate: Plan) -> str:
        small = apply(model, candidate).eval()
        try:
            with torch.no_grad():
                outs = [
                    o.detach().float() for o in flatten_outputs(call_model(small, example_inputs))
                ]
        except Exception as exc:  # noqa: BLE001 - reported below with every attempt
            cause = exc.__cause__ or exc
            first = str(cause).splitlines()[0] if str(cause) else ""
            return f"{type(cause).__name__}: {first}"
        finally:
            del small
        if not graph.protect_outputs:
            return ""
        got = sorted(tuple(o.shape) for o in outs)
        if got != expected:
            return f"output shapes changed from {expected} to {got}"
        diff = _max_difference(outs, reference or [])
        if diff is not None:
            return (
                f"outputs differ from the original with the removed units zeroed "
                f"(max difference {diff:.3g})"
            )
        return ""

    error = runs(result)
    if not error:
        return result
    errors.append(error)
    if not shape_attrs:
        return "; ".join(errors)
    candidate = with_attrs(shape_attrs)
    error = runs(candidate)
    if error:
        errors.append(error)
        return "; ".join(errors)
    # keep only the attribute updates the model needs: drop one attribute name at a time
    needed = list(shape_attrs)
    for attr_name in sorted({a for _m, a, _v in shape_attrs}):
        trial = [x for x in needed if x[1] != attr_name]
        smaller = with_attrs(trial)
        if not runs(smaller):
            needed = trial
            candidate = smaller
    return candidate


def prune(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    inplace: bool = False,
    **options: Any,
) -> nn.Module:
    """Plan and apply in one call: returns a physically smaller copy of ``model``.

    Takes the same keyword options as :func:`plan`. ``inplace=True`` prunes ``model``
    itself instead of a copy, so that a very large model never exists twice in memory; the
    result is still checked against the original outputs with the removed units zeroed,
    but a failure then leaves ``model`` pruned (a :class:`PlanError` says so). Every argument
    is checked before the model is touched; an option :func:`plan` does not take is an
    :class:`InputError` naming the closest one.
    """
    check_bool(inplace, "inplace")
    arguments = _plan_options(options)
    exclude, blocks, calib = _check_arguments(model, example_inputs, **arguments)
    arguments.update(exclude=exclude, remove_blocks=blocks, calib=calib)
    if not inplace:
        return apply(model, _plan(model, example_inputs, **arguments))
    graph = arguments["graph"] or analyze(
        model, example_inputs, exclude=exclude, protect_outputs=arguments["protect_outputs"]
    )
    arguments.update(graph=graph, verify=False)
    the_plan = _plan(model, example_inputs, **arguments)
    decisions = _decisions_of(graph, the_plan)
    was_training = model.training
    model.eval()
    try:
        reference = _zeroed_reference(model, example_inputs, graph, decisions, the_plan.removed)
        _check_finite_reference(graph.model_name, reference)
        small = apply(model, the_plan, inplace=True)
        with torch.no_grad():
            outs = [o.detach().float() for o in flatten_outputs(call_model(small, example_inputs))]
    finally:
        model.train(was_training)
    if _max_difference(outs, reference or [], shapes_must_match=True) is not None:
        raise PlanError(
            f"the model {graph.model_name}, pruned in place, no longer matches its original "
            f"outputs; it has been modified: build it again and prune with inplace=False, "
            f"which also repairs attribute sizes the module code depends on"
        )
    return small


def _plan_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Every keyword option of :func:`plan`, ``options`` over the defaults; unknown names
    are refused with the closest known ones."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(plan).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = [name for name in options if name not in defaults]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise InputError(
            f"ns.prune got an unknown option {unknown[0]}={options[unknown[0]]!r}; {hint}"
            f"it takes inplace= and the options of ns.plan: {', '.join(defaults)}"
        )
    return {**defaults, **options}


def _decisions_of(graph: Graph, the_plan: Plan) -> dict[int, np.ndarray]:
    by_name = {g.name: g for g in graph.groups}
    out: dict[int, np.ndarray] = {}
    for decision in the_plan.groups:
        g = by_name.get(decision.name)
        if g is None:
            continue
        mask = np.zeros(g.size, dtype=bool)
        mask[list(decision.kept)] = True
        out[g.uid] = mask
    return out
