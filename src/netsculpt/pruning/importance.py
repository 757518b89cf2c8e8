"""Importance criteria: one callable ``(group, context) -> scores`` each.

Scores are one number per prunable unit of the group (channel, neuron, head); higher
means more important. Every criterion scores the *whole coupled group*: all parameter
slices that a unit owns, in every layer it touches.

Built in: ``magnitude`` (L2 norms), ``l1``, ``taylor`` (first order, |w * dL/dw| summed
over the unit; needs calibration batches), ``activation`` (Wanda-style: the norm of
each input column scaled by the mean absolute activation feeding it; needs calibration
batches), ``random`` and ``lamp`` (layer-adaptive magnitude, ranked globally). Add one
with :func:`register_importance`, declaring what it needs (``needs_calib``,
``ranks_globally``); :func:`criterion_info` reads the declaration back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_finite_inputs
from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs
from netsculpt.errors import ExampleInputsError, InputError, UnknownNameError
from netsculpt.graph.analysis import Graph, Group

__all__ = [
    "IMPORTANCE",
    "CriterionInfo",
    "ImportanceContext",
    "check_calib",
    "criterion_info",
    "get_importance",
    "register_importance",
]


@dataclass
class ImportanceContext:
    """What a criterion may look at."""

    model: nn.Module
    graph: Graph
    calib: Sequence[ExampleInputs] | None = None
    loss_fn: Callable[[Any, ExampleInputs], torch.Tensor] | None = None
    seed: int = 0
    grads: dict[str, torch.Tensor] | None = None
    activations: dict[str, torch.Tensor] | None = None
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensor(self, name: str) -> torch.Tensor:
        """The parameter or buffer ``name`` of the model, detached (cached)."""
        if name not in self._tensors:
            t: torch.Tensor
            try:
                t = self.model.get_parameter(name)
            except AttributeError:
                t = self.model.get_buffer(name)
            self._tensors[name] = t.detach()
        return self._tensors[name]


Importance = Callable[[Group, ImportanceContext], np.ndarray]
IMPORTANCE: dict[str, Importance] = {}


@dataclass(frozen=True)
class CriterionInfo:
    """What a registered criterion declares it needs, read by the planner and the search.

    Attributes:
        needs_calib: the criterion reads calibration batches (``context.calib``); planning
            with it and no batches is refused, and a search hands it the task's batches.
        ranks_globally: its scores are comparable across groups, so the planner ranks the
            units of all groups together by default (``global_ranking=None``).
    """

    needs_calib: bool = False
    ranks_globally: bool = False


_INFO: dict[str, CriterionInfo] = {}


def register_importance(
    name: str, *, needs_calib: bool = False, ranks_globally: bool = False
) -> Callable[[Importance], Importance]:
    """Register an importance criterion under ``name`` (usable as ``importance=name``).

    ``needs_calib=True`` declares that it reads calibration batches (``context.calib``):
    :func:`netsculpt.plan` then requires ``calib=`` and a search passes the task's batches.
    ``ranks_globally=True`` declares scores comparable across groups, so that units of all
    groups are ranked together unless ``PruneConfig(global_ranking=False)`` says otherwise.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"an importance name must be a non-empty str, got {name!r}")
    for flag, value in (("needs_calib", needs_calib), ("ranks_globally", ranks_globally)):
        if not isinstance(value, bool):
            raise InputError(
                f"register_importance({name!r}, {flag}={value!r}): {flag} must be True or False"
            )
    info = CriterionInfo(needs_calib=needs_calib, ranks_globally=ranks_globally)

    def deco(fn: Importance) -> Importance:
        if not callable(fn):
            raise InputError(
                f"importance {name!r} must be a callable (group, context) -> scores, got "
                f"{type(fn).__name__}"
            )
        IMPORTANCE[name] = fn
        _INFO[name] = info
        return fn

    return deco


def _check_name(name: Any) -> str:
    if callable(name) and not isinstance(name, str):
        label = getattr(name, "__name__", type(name).__name__)
        raise InputError(
            f"importance must be the name of a registered criterion, got the callable "
            f"{label!r}; register it with ns.register_importance(name) (adding needs_calib=True "
            f"if it reads calibration batches) and pass the name, e.g. importance='my_score'"
        )
    if not isinstance(name, str):
        raise InputError(
            f"importance must be a criterion name (str), got {name!r} ({type(name).__name__}); "
            f"choose one of {sorted(IMPORTANCE)}"
        )
    if name not in IMPORTANCE:
        raise UnknownNameError(
            f"unknown importance {name!r}; choose one of {sorted(IMPORTANCE)} or register "
            f"your own with ns.register_importance({name!r}) before using it"
        )
    return name


def get_importance(name: str) -> Importance:
    """The criterion registered under ``name``.

    Raises:
        UnknownNameError: no criterion has that name (the message lists the registered ones).
        InputError: ``name`` is not a string (a callable must be registered first).
    """
    return IMPORTANCE[_check_name(name)]


def criterion_info(name: str) -> CriterionInfo:
    """What the criterion registered under ``name`` declares it needs.

    >>> criterion_info("taylor")
    CriterionInfo(needs_calib=True, ranks_globally=False)

    Raises:
        UnknownNameError: no criterion has that name.
    """
    return _INFO.get(_check_name(name), CriterionInfo())


def check_calib(calib: Any, importance: str) -> Any:
    """Calibration batches for ``importance``: required by a criterion registered with
    ``needs_calib=True``, and when given, a collection of batches (a list, or an iterable
    such as a DataLoader), each a tensor, a tuple or a dict of keyword inputs. A list or
    tuple is checked batch by batch and returned as a list; other iterables are returned
    unread."""
    if calib is None:
        if criterion_info(importance).needs_calib:
            raise InputError(
                f"importance {importance!r} needs calibration batches (it is registered with "
                f"needs_calib=True): pass calib=[batch, ...] (each batch shaped like "
                f"example_inputs)"
                + (
                    ", and optionally loss_fn=(outputs, batch) -> loss"
                    if importance == "taylor"
                    else ""
                )
                + "; or choose importance='magnitude', which needs no data"
            )
        return None
    if isinstance(calib, (torch.Tensor, Mapping)):
        raise ExampleInputsError(
            f"calib must be a list of batches, got one {type(calib).__name__}; wrap a single "
            f"batch in a list: calib=[batch]"
        )
    if isinstance(calib, (str, bytes)) or not isinstance(calib, Iterable):
        raise ExampleInputsError(
            f"calib must be a list of batches (tensors, tuples or dicts of keyword inputs), got "
            f"{calib!r} ({type(calib).__name__})"
        )
    if not isinstance(calib, (list, tuple)):
        return calib
    if not calib:
        raise ExampleInputsError(
            "calib is empty; pass at least one batch of example inputs, e.g. calib=[x]"
        )
    for i, batch in enumerate(calib):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise ExampleInputsError(
                f"calib[{i}] is {type(batch).__name__} ({batch!r:.60}), not a batch; each batch "
                f"is a tensor, a tuple of tensors or a dict of keyword inputs"
            )
        check_finite_inputs(batch, what=f"calib[{i}]")
    return list(calib)


def _per_position(t: torch.Tensor, dim: int, how: str) -> np.ndarray:
    """Reduce ``t`` over every dimension but ``dim``: sum of squares or of abs values."""
    x = t.detach().float().movedim(dim, 0).reshape(t.shape[dim], -1)
    v = x.abs().sum(1) if how == "l1" else x.pow(2).sum(1)
    return v.numpy().astype(np.float64)


def _bins(graph: Graph, group: Group, tensor: str, dim: int, values: np.ndarray) -> np.ndarray:
    _leaf, arr = graph.index_map(tensor, dim)[group.uid]
    ok = arr >= 0
    return np.bincount(arr[ok], weights=values[ok], minlength=group.size)[: group.size]


def _weight_slots(group: Group) -> list[tuple[str, int]]:
    return [(s.tensor, s.dim) for s in group.slots if not s.is_buffer]


def _norm_scores(group: Group, ctx: ImportanceContext, how: str = "l2") -> np.ndarray:
    total = np.zeros(group.size)
    for tensor, dim in _weight_slots(group):
        per = _per_position(ctx.tensor(tensor), dim, how)
        binned = _bins(ctx.graph, group, tensor, dim, per)
        total += np.sqrt(binned) if how != "l1" else binned
    return total


@register_importance("magnitude")
def magnitude(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """L2 norm of every slice a unit owns, summed over the coupled group."""
    return _norm_scores(group, ctx, "l2")


@register_importance("l1")
def l1(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """L1 norm of every slice a unit owns, summed over the coupled group."""
    return _norm_scores(group, ctx, "l1")


@register_importance("random")
def random(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """Uniform random scores, seeded by the context's seed and the group's name."""
    seed = (ctx.seed * 1_000_003 + sum(ord(c) for c in group.name)) % (2**32)
    return np.random.default_rng(seed).random(group.size)


@register_importance("lamp", ranks_globally=True)
def lamp(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """LAMP (Lee et al., 2021): squared magnitude over the sum of the larger ones.

    Scores become comparable across groups, so a global ranking gives each group its own
    (layer-adaptive) ratio.
    """
    s = magnitude(group, ctx) ** 2
    order = np.argsort(s)
    sorted_s = s[order]
    tail = np.cumsum(sorted_s[::-1])[::-1]
    out = np.empty_like(s)
    out[order] = sorted_s / np.maximum(tail, 1e-30)
    return out


def _default_loss(outputs: Any, batch: ExampleInputs) -> torch.Tensor:
    tensors = [t for t in flatten_outputs(outputs) if t.is_floating_point()]
    if not tensors:
        raise InputError(
            "the model returned no floating-point output to build a loss from; pass "
            "loss_fn=lambda outputs, batch: ... to ns.plan"
        )
    return tensors[0].float().pow(2).mean()


def compute_grads(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Sum of parameter gradients of the loss over the calibration batches."""
    if not ctx.calib:
        raise InputError(
            "importance 'taylor' needs calibration batches: pass calib=[batch, ...] (each "
            "batch shaped like example_inputs) and optionally loss_fn=(outputs, batch)->loss"
        )
    model = ctx.model
    loss_fn = ctx.loss_fn or _default_loss
    params = dict(model.named_parameters())
    saved = {n: (p.grad.clone() if p.grad is not None else None) for n, p in params.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    model.eval()
    grads: dict[str, torch.Tensor] = {}
    try:
        for p in params.values():
            p.grad = None
            p.requires_grad_(True)
        with torch.enable_grad():
            for batch in ctx.calib:
                loss = loss_fn(call_model(model, batch), batch)
                loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] = p.grad.detach().clone()
    finally:
        for n, p in params.items():
            p.grad = saved[n]
            p.requires_grad_(flags[n])
        model.train(was_training)
    return grads


@register_importance("taylor", needs_calib=True)
def taylor(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """First-order Taylor: sum over a unit's weights of |w * dL/dw| (calibration batches)."""
    if ctx.grads is None:
        ctx.grads = compute_grads(ctx)
    total = np.zeros(group.size)
    for tensor, dim in _weight_slots(group):
        g = ctx.grads.get(tensor)
        if g is None:
            continue
        w = ctx.tensor(tensor)
        per = _per_position(w * g, dim, "l1")
        total += _bins(ctx.graph, group, tensor, dim, per)
    return total


def compute_activations(ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """Mean |input| per input channel of every Linear/Conv module over calibration batches."""
    if not ctx.calib:
        raise InputError(
            "importance 'activation' needs calibration batches: pass calib=[batch, ...], "
            "each shaped like example_inputs"
        )
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(name: str, channel_dim: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0].detach().float()
            cd = channel_dim if channel_dim >= 0 else x.ndim + channel_dim
            if x.ndim <= cd:
                return
            v = x.abs().movedim(cd, 0).reshape(x.shape[cd], -1).mean(1)
            sums[name] = sums[name] + v if name in sums else v
            counts[name] = counts.get(name, 0) + 1

        return hook

    for name, module in ctx.model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(name, -1)))
        elif isinstance(module, nn.modules.conv._ConvNd):
            hooks.append(module.register_forward_hook(make_hook(name, 1)))
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        with torch.no_grad():
            for batch in ctx.calib:
                call_model(ctx.model, batch)
    finally:
        for h in hooks:
            h.remove()
        ctx.model.train(was_training)
    return {n: sums[n] / counts[n] for n in sums}


@register_importance("activation", needs_calib=True)
def activation(group: Group, ctx: ImportanceContext) -> np.ndarray:
    """Wanda-style: input-column norms scaled by the mean |activation| feeding them."""
    if ctx.activations is None:
        ctx.activations = compute_activations(ctx)
    total = np.zeros(group.size)
    for tensor, dim in _weight_slots(group):
        w = ctx.tensor(tensor)
        module = tensor.rsplit(".", 1)[0] if "." in tensor else ""
        per = _per_position(w, dim, "l2")
        act = ctx.activations.get(module)
        # input columns of a Linear/Conv: scale by the activation (grouped convolutions,
        # whose columns are per group, keep the plain weight norm)
        if act is not None and dim == 1 and w.ndim >= 2 and act.numel() == w.shape[1]:
            per = per * act.numpy().astype(np.float64) ** 2
        total += np.sqrt(_bins(ctx.graph, group, tensor, dim, per))
    return total
