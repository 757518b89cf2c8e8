"""``ns.plan`` and ``ns.prune``: decide what to cut, build the plan, verify it.

The three steps live in their own modules: :mod:`netsculpt.pruning._decide` (which units
go), :mod:`netsculpt.pruning._build` (the :class:`Plan` that removes them) and
:mod:`netsculpt.pruning._verify` (the pruned model computes what the original does with
those units zeroed). This module checks the arguments and runs the steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError, PlanError
from netsculpt.graph._arguments import (
    check_bool,
    check_model_and_inputs,
    check_selection,
    check_weights,
)
from netsculpt.graph.analysis import Graph, analyze
from netsculpt.pruning._build import Built, build, in_shape_sites
from netsculpt.pruning._decide import Decision, decide
from netsculpt.pruning._residual import require_residual
from netsculpt.pruning._verify import verify
from netsculpt.pruning.apply import apply
from netsculpt.pruning.config import PruneConfig, resolve_config
from netsculpt.pruning.importance import check_calib, get_importance
from netsculpt.pruning.plan import Plan
from netsculpt.recovery.reconstruct import reconstruct

__all__ = ["plan", "prune"]

Ratio = float | Mapping[str, float]
LossFn = Callable[[Any, ExampleInputs], torch.Tensor]


def plan(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: PruneConfig | None = None,
    *,
    ratio: Ratio | None = None,
    importance: str | None = None,
    calib: Sequence[ExampleInputs] | None = None,
    loss_fn: LossFn | None = None,
    graph: Graph | None = None,
) -> Plan:
    """Decide which channels, neurons and heads to remove.

    Args:
        model: the model to prune; it is not modified.
        example_inputs: a tensor, a tuple of tensors, or a dict of keyword inputs.
        config: every pruning option (:class:`netsculpt.PruneConfig`); default
            ``PruneConfig()``: 30% of every prunable group by magnitude.
        ratio: replaces ``config.ratio``: fraction of each group's width removed, in
            [0, 1), or a mapping from group name (or ``"re:"`` pattern, or ``"*"`` for the
            rest) to a ratio.
        importance: replaces ``config.importance``: ``"magnitude"``, ``"l1"``,
            ``"taylor"``, ``"activation"``, ``"random"``, ``"lamp"`` or a name registered
            with :func:`netsculpt.register_importance`.
        calib: calibration batches, required by criteria that need them (``taylor``,
            ``activation``, any registered with ``needs_calib=True``).
        loss_fn: ``(outputs, batch) -> loss`` for ``taylor`` (default: mean squared output).
        graph: a graph from :func:`netsculpt.analyze`, to skip capturing again.

    The config used is recorded in the plan (``plan.meta["config"]``, its
    :meth:`~netsculpt.PruneConfig.to_dict`).

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
    config = resolve_config(config, ratio=ratio, importance=importance, caller="ns.plan")
    calib = _check_arguments(
        model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=graph
    )
    return _plan(model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=graph)


def prune(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: PruneConfig | None = None,
    *,
    ratio: Ratio | None = None,
    importance: str | None = None,
    calib: Sequence[ExampleInputs] | None = None,
    loss_fn: LossFn | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Plan and apply in one call: returns a physically smaller copy of ``model``.

    Takes the arguments of :func:`plan` (but ``graph``). ``inplace=True`` prunes ``model``
    itself instead of a copy, so that a very large model never exists twice in memory; it
    is checked by the same verification as a copy (unless ``config.verify`` is False), but
    a failure then leaves ``model`` pruned (a :class:`PlanError` says so). Every argument is
    checked before the model is touched.

    With ``config.reconstruct`` set, the pruned copy is then repaired by
    :func:`netsculpt.reconstruct` on ``calib`` (which is then required, and read more than
    once: an iterable that is not a list is read into one first); its
    :class:`~netsculpt.ReconstructResult` is ``ns.reconstruction_of(small)``.
    """
    check_bool(inplace, "inplace")
    config = resolve_config(config, ratio=ratio, importance=importance, caller="ns.prune")
    if config.reconstruct is not None:
        calib = _reconstruct_calib(calib, inplace)
    calib = _check_arguments(
        model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=None
    )
    if not inplace:
        small = apply(
            model, _plan(model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=None)
        )
        if config.reconstruct is not None:
            reconstruct(small, model, calib, config.reconstruct)
        return small
    graph, decision, built = _decide_and_build(
        model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=None
    )
    if not config.verify or built.plan.is_identity:
        return apply(model, built.plan, inplace=True)
    outcome = verify(model, example_inputs, graph, decision.keep, built.plan, inplace=True)
    if not outcome.ok:
        raise PlanError(
            f"the model {graph.model_name}, pruned in place, no longer matches its original "
            f"outputs ({outcome.error}); it has been modified: build it again and prune with "
            f"inplace=False, which also repairs attribute sizes the module code depends on"
        )
    return cast(nn.Module, outcome.model)  # verify(inplace=True) returns the pruned model


def _reconstruct_calib(calib: Any, inplace: bool) -> Any:
    """The calibration batches ``PruneConfig(reconstruct=...)`` needs, as a list."""
    if calib is None:
        raise InputError(
            "PruneConfig(reconstruct=...) refits the pruned layers on calibration batches: "
            "pass calib=[batch, ...] (each batch shaped like example_inputs, a few hundred "
            "samples in all), or drop reconstruct"
        )
    if inplace:
        raise InputError(
            "PruneConfig(reconstruct=...) needs the original model beside the pruned one, so "
            "it cannot prune in place: pass inplace=False, or prune in place without "
            "reconstruct and call ns.reconstruct(small, original, calib) with a copy"
        )
    if isinstance(calib, Iterable) and not isinstance(
        calib, (list, tuple, torch.Tensor, Mapping, str, bytes)
    ):
        return list(calib)
    return calib


def _check_arguments(
    model: Any,
    example_inputs: Any,
    config: PruneConfig,
    *,
    calib: Any,
    loss_fn: Any,
    graph: Any,
) -> Any:
    """Check what the config cannot check alone (names against the model, the data);
    returns ``calib`` normalised (a list, or an iterable left unread)."""
    check_model_and_inputs(model, example_inputs)
    get_importance(config.importance)  # registered since the config was made
    if graph is not None and not isinstance(graph, Graph):
        raise InputError(
            f"graph must be the result of ns.analyze(model, example_inputs) or None, got "
            f"{type(graph).__name__}"
        )
    if graph is not None and graph.residual != config.residual:
        raise InputError(
            f"the graph was analysed with residual={graph.residual}, the config asks for "
            f"residual={config.residual}; analyse with ns.analyze(model, inputs, "
            f"residual={config.residual}) or pass no graph"
        )
    group_names = tuple(g.name for g in graph.groups) if graph is not None else ()
    check_selection(model, list(config.exclude), "exclude", extra=group_names)
    if loss_fn is not None and not callable(loss_fn):
        raise InputError(
            f"loss_fn must be a callable (outputs, batch) -> loss tensor, or None, got "
            f"{loss_fn!r} ({type(loss_fn).__name__})"
        )
    calib = check_calib(calib, config.importance)
    check_weights(model)
    return calib


def _decide_and_build(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: PruneConfig,
    *,
    calib: Sequence[ExampleInputs] | None,
    loss_fn: LossFn | None,
    graph: Graph | None,
) -> tuple[Graph, Decision, Built]:
    if graph is None:
        graph = analyze(
            model,
            example_inputs,
            exclude=list(config.exclude),
            protect_outputs=config.protect_outputs,
            residual=config.residual,
        )
    if config.residual:
        require_residual(graph)
    decision = decide(model, example_inputs, graph, config, calib=calib, loss_fn=loss_fn)
    ratio = config.ratio
    meta = {
        "ratio": dict(ratio) if isinstance(ratio, Mapping) else ratio,
        "importance": config.importance,
        "round_to": config.round_to,
        "global_ranking": decision.global_ranking,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "exclude": list(config.exclude),
        "remove_blocks": [m for m, _ in decision.removed],
        "config": config.to_dict(),
    }
    built = build(
        model, graph, decision.groups, decision.keep, decision.removed, meta, decision.per_expert
    )
    return graph, decision, built


def _warn_kept_whole(model_name: str, names: Sequence[str], error: str, plan: Plan) -> None:
    """Say which groups the plan had to keep whole, and why; loudest when nothing is cut."""
    shown = ", ".join(repr(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
    warnings.warn(
        ("the plan removes nothing: " if plan.is_identity else "")
        + f"netsculpt kept {len(names)} group(s) of {model_name} whole ({shown}) because the "
        f"pruned model did not run like the original when they were cut ({error}); they are "
        f"listed in plan.meta['kept_whole']: exclude them, or report the model to netsculpt",
        UserWarning,
        stacklevel=4,
    )


def _plan(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: PruneConfig,
    *,
    calib: Sequence[ExampleInputs] | None,
    loss_fn: LossFn | None,
    graph: Graph | None,
) -> Plan:
    """:func:`plan` on arguments already checked."""
    graph, decision, built = _decide_and_build(
        model, example_inputs, config, calib=calib, loss_fn=loss_fn, graph=graph
    )
    if not config.verify or built.plan.is_identity:
        return built.plan
    outcome = verify(
        model, example_inputs, graph, decision.keep, built.plan, shape_attrs=built.shape_attrs
    )
    if outcome.ok:
        return outcome.plan
    # the module code hard-codes sizes netsculpt could not trace to an attribute: keep the
    # groups behind those sizes whole (listed in plan.meta["kept_whole"]) and try again
    errors = [outcome.error]
    keep = decision.keep
    for keep_whole in (built.unresolved, in_shape_sites(graph, keep)):
        keep_whole = {uid for uid in keep_whole if not keep.get(uid, np.ones(1, bool)).all()}
        if not keep_whole:
            continue
        relaxed = {uid: (np.ones_like(m) if uid in keep_whole else m) for uid, m in keep.items()}
        names = [g.name for g in decision.groups if g.uid in keep_whole]
        meta = {**built.plan.meta, "kept_whole": names}
        per_expert = {u: m for u, m in decision.per_expert.items() if u not in keep_whole}
        retry = build(model, graph, decision.groups, relaxed, decision.removed, meta, per_expert)
        outcome = verify(
            model, example_inputs, graph, relaxed, retry.plan, shape_attrs=retry.shape_attrs
        )
        if outcome.ok:
            _warn_kept_whole(graph.model_name, names, errors[0], outcome.plan)
            return outcome.plan
        errors.append(outcome.error)
    raise PlanError(
        f"the pruned {graph.model_name} does not run like the original ("
        + "; ".join(dict.fromkeys(errors))
        + "); its code probably hard-codes a size netsculpt removed: exclude the module "
        "named in the error with PruneConfig(exclude=[...]), or report the model to netsculpt"
    )
