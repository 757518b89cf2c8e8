"""Verifying a plan: the pruned model must compute what the original does with the
removed units set to zero.

The third of the planner's three steps (:mod:`netsculpt.pruning._decide`,
:mod:`netsculpt.pruning._build`, verify), and the only place a pruned model is checked:
``ns.plan`` checks a pruned copy, ``ns.prune(inplace=True)`` the model pruned in place,
both through :func:`verify`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs
from netsculpt.errors import PlanError
from netsculpt.graph.analysis import Graph
from netsculpt.pruning._build import Attr, kept_positions
from netsculpt.pruning.apply import apply
from netsculpt.pruning.plan import Plan

__all__ = ["Verified", "verify"]

#: relative tolerance between the pruned outputs and the zeroed original's
TOLERANCE = 1e-3


@dataclass(frozen=True)
class Verified:
    """The outcome of :func:`verify`.

    Attributes:
        plan: the plan checked, with the size attribute updates the model code needs.
        error: why the pruned model does not run like the original; empty when it does.
        model: with ``inplace=True``, the model pruned in place (whatever the outcome).
    """

    plan: Plan
    error: str = ""
    model: nn.Module | None = None

    @property
    def ok(self) -> bool:
        return not self.error


def verify(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    keep: Mapping[int, np.ndarray],
    plan: Plan,
    *,
    shape_attrs: Sequence[Attr] = (),
    inplace: bool = False,
) -> Verified:
    """Apply ``plan`` and compare the pruned model with the original whose removed units
    (``keep`` marks the kept ones) are zero, on ``example_inputs``.

    On a copy (``inplace=False``), when the pruned copy fails, the plan is tried again with
    the size attributes ``shape_attrs`` (a head count a reshape uses), keeping only those
    the model needs. In place, ``model`` itself is pruned, once: a failure leaves it pruned
    (:attr:`Verified.model`), and attributes cannot be tried.

    Raises:
        PlanError: the original's outputs are not finite, so nothing can be compared.
    """
    was_training = model.training
    model.eval()
    try:
        reference = _zeroed_reference(model, example_inputs, graph, keep, plan)
    finally:
        model.train(was_training)
    _check_finite_reference(graph.model_name, reference)
    if inplace:
        try:
            small, error = _run(model, example_inputs, graph, plan, reference, inplace=True)
        finally:
            model.train(was_training)
        return Verified(plan, error, small)

    def runs(candidate: Plan) -> str:
        return _run(model, example_inputs, graph, candidate, reference, inplace=False)[1]

    errors = [runs(plan)]
    if not errors[0]:
        return Verified(plan)
    if not shape_attrs:
        return Verified(plan, errors[0])
    candidate = _with_attrs(plan, shape_attrs)
    error = runs(candidate)
    if error:
        return Verified(plan, "; ".join([*errors, error]))
    # keep only the attribute updates the model needs: drop one attribute name at a time
    needed = list(shape_attrs)
    for attr_name in sorted({a for _m, a, _v in shape_attrs}):
        trial = [x for x in needed if x[1] != attr_name]
        smaller = _with_attrs(plan, trial)
        if not runs(smaller):
            needed = trial
            candidate = smaller
    return Verified(candidate)


def _with_attrs(plan: Plan, attrs: Sequence[Attr]) -> Plan:
    return dataclasses.replace(plan, attrs=plan.attrs + tuple(attrs))


def _run(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    candidate: Plan,
    reference: Sequence[torch.Tensor] | None,
    *,
    inplace: bool,
) -> tuple[nn.Module | None, str]:
    """Apply ``candidate`` and run the result: (the pruned model when in place, the error)."""
    try:
        small = apply(model, candidate, inplace=inplace).eval()
    except PlanError as exc:
        if not candidate.slices:
            raise
        # a slice rewrite the module's code does not allow: nothing was changed yet
        return (model if inplace else None), f"PlanError: {exc}"
    try:
        with torch.no_grad():
            outs = [o.detach().float() for o in flatten_outputs(call_model(small, example_inputs))]
    except Exception as exc:  # noqa: BLE001 - reported by the caller with every attempt
        cause = exc.__cause__ or exc
        first = str(cause).splitlines()[0] if str(cause) else ""
        return (small if inplace else None), f"{type(cause).__name__}: {first}"
    error = _mismatch(graph, outs, reference)
    if not inplace:
        del small  # a pruned copy is dropped as soon as it has run
        return None, error
    return small, error


def _mismatch(
    graph: Graph, outs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor] | None
) -> str:
    """How the pruned outputs differ from the reference; empty when they match.

    With ``protect_outputs`` every output keeps its shape; without, outputs whose width
    changed are not compared, the others are.
    """
    if graph.protect_outputs:
        expected = sorted(graph.output_shapes)
        got = sorted(tuple(o.shape) for o in outs)
        if got != expected:
            return f"output shapes changed from {expected} to {got}"
    for a, b in zip(outs, reference or [], strict=False):
        if a.shape != b.shape or not a.numel():
            continue
        diff = float((a - b).abs().max())
        if not diff <= TOLERANCE * max(1.0, float(b.abs().max())):
            return (
                f"outputs differ from the original with the removed units zeroed "
                f"(max difference {diff:.3g})"
            )
    return ""


def _zeroed_reference(
    model: nn.Module,
    example_inputs: ExampleInputs,
    graph: Graph,
    keep: Mapping[int, np.ndarray],
    plan: Plan,
) -> list[torch.Tensor] | None:
    """Outputs of ``model`` with every unit the plan removes set to zero, in place and restored.

    Removing all-zero units must not change the outputs, so these are exactly what the
    pruned model has to produce. None when a removed block becomes the identity (zeroing
    weights cannot express that). Positions the plan gathers per index (each expert's own
    neurons) are zeroed per index.
    """
    removed = plan.removed
    if any(kind.startswith("identity") for _m, kind in removed):
        return None
    params = dict(model.named_parameters(remove_duplicate=False))
    gathered = {(t, d) for t, d, _by, _rows in plan.gathers}
    saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for tensor, dim, by, rows in plan.gathers:
                stacked = params[tensor]
                everything = torch.arange(stacked.shape[0], device=stacked.device)
                saved.append((stacked, 0, everything, stacked.detach().clone()))
                inner = dim - 1 if dim > by else dim
                for e, row in enumerate(rows):
                    gone = sorted(set(range(stacked.shape[dim])) - set(row))
                    if gone:
                        idx = torch.as_tensor(gone, dtype=torch.long, device=stacked.device)
                        stacked.select(by, e).index_fill_(inner, idx, 0.0)
            for tensor, dim in graph.slot_spaces:
                t = params.get(tensor)
                if t is None or (tensor, dim) in gathered:
                    continue
                mask = kept_positions(graph, tensor, dim, keep)
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


def _check_finite_reference(model_name: str, reference: Sequence[Any] | None) -> None:
    """Outputs to compare the pruned copy with must be finite, or no comparison means much."""
    for i, out in enumerate(reference or []):
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise PlanError(
                f"output {i} of {model_name} on example_inputs holds NaN or infinite values "
                f"(with the units the plan removes set to zero), so netsculpt cannot check "
                f"that the pruned copy computes the same; look for an overflow (float16 "
                f"activations, huge inputs) in the model, or pass PruneConfig(verify=False) "
                f"to skip the check"
            )
