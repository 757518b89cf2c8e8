"""Mixture-of-experts layers: removing whole experts by router usage, and the transformers
config that must follow.

An expert layer (transformers 5.x: ``MixtralSparseMoeBlock``, ``Qwen2MoeSparseMoeBlock``, ...)
is a block with a router (``gate``: one logit per expert, top-k routing) and ``experts``
whose weights are stacked 3-D parameters ``[num_experts, ...]``, or, in hand-written layers
and transformers 4.x, an ``nn.ModuleList`` with one module per expert (a plan then keeps
some of its entries: :attr:`netsculpt.Plan.lists`). The experts' neurons are
pruned exactly by :func:`netsculpt.prune` (:mod:`netsculpt.graph.ops.experts`); removing a
whole expert is not exact, because the tokens it served are routed to other experts. So it
is its own, explicit step, :func:`prune_experts`: it counts, on calibration batches, how often
the router picks each expert among its top k, and removes the least used ones with their
router rows. The result equals the original model with those experts' router logits set to
``-inf`` (softmax and top-k then never see them), not the original model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_model
from netsculpt._inputs import ExampleInputs, call_model
from netsculpt.errors import InputError, UnsupportedOperationError
from netsculpt.graph._arguments import check_selection, match_names
from netsculpt.pruning.apply import apply
from netsculpt.pruning.config import check_ratio
from netsculpt.pruning.importance import check_calib
from netsculpt.pruning.plan import GroupDecision, Plan, is_size_attribute

__all__ = ["APPROXIMATE", "MoeBlock", "expert_usage", "find_moe_blocks", "prune_experts"]

APPROXIMATE = (
    "removing experts re-routes the tokens they served, so the pruned model is not the "
    "original with units zeroed: it equals the original with the removed experts' router "
    "logits set to -inf. Not verified; measure the task metric after this step"
)

_ROUTER_NAMES = ("gate", "router")


@dataclass(frozen=True)
class MoeBlock:
    """One expert layer: where its router and experts are, and how many experts it routes to.

    ``expert_tensors`` and ``router_tensors`` are the parameters and buffers whose first
    dimension is the expert dimension; ``in_list``: the experts are the entries of an
    ``nn.ModuleList`` (one module each) rather than stacked weights.
    """

    path: str
    experts: str
    router: str
    num_experts: int
    top_k: int
    expert_tensors: tuple[str, ...]
    router_tensors: tuple[str, ...]
    in_list: bool = False


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _int_attr(module: Any, name: str) -> int | None:
    value = vars(module).get(name) if isinstance(module, nn.Module) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_dim_tensors(module: nn.Module, prefix: str, size: int) -> tuple[str, ...]:
    return tuple(
        _join(prefix, n)
        for n, t in [*module.named_parameters(), *module.named_buffers()]
        if t.dim() >= 1 and t.shape[0] == size
    )


def find_moe_blocks(model: nn.Module) -> list[MoeBlock]:
    """Every expert layer of ``model``: a module with an ``experts`` child, either an
    ``nn.ModuleList`` of experts or a module that keeps a ``num_experts`` count and stacked
    ``[num_experts, ...]`` weights, and a router child (``gate`` or ``router``) with one
    weight row per expert.

    Raises :class:`UnsupportedOperationError` naming the module for an expert layer netsculpt
    cannot follow: no router with one row per expert, or no top-k it can read.
    """
    config = getattr(model, "config", None)
    blocks: list[MoeBlock] = []
    for path, module in model.named_modules():
        experts = module._modules.get("experts")
        if experts is None:
            continue
        where = _join(path, "experts")
        in_list = isinstance(experts, nn.ModuleList)
        if in_list:  # one module per expert (hand-written layers, transformers 4.x)
            n: int | None = len(experts)
            stacked: tuple[str, ...] = ()
        else:
            n = _int_attr(experts, "num_experts")
            if n is None:
                continue
            stacked = _first_dim_tensors(experts, where, n)
            if not any(model.get_parameter(t).dim() == 3 for t in stacked if _is_param(model, t)):
                continue
        router_name = next((r for r in _ROUTER_NAMES if r in module._modules), None)
        router = module._modules.get(router_name) if router_name else None
        weight = getattr(router, "weight", None)
        if router is None or not isinstance(weight, torch.Tensor) or weight.shape[0] != n:
            raise UnsupportedOperationError(
                f"cannot trace the router of the expert layer {path or '<top>'!r}: it has no "
                f"'gate' or "
                f"'router' child with one weight row per expert ({n}); exclude the layer, or "
                f"give it a router module whose forward returns the [tokens, {n}] logits"
            )
        top_k = (
            _int_attr(router, "top_k")
            or _int_attr(module, "top_k")
            or getattr(config, "num_experts_per_tok", None)
        )
        if not isinstance(top_k, int) or not 1 <= top_k <= n:
            raise UnsupportedOperationError(
                f"cannot tell how many experts the router of {path!r} picks per token (no "
                f"integer top_k on {_join(path, router_name or '')!r}, nor num_experts_per_tok "
                f"in the model config)"
            )
        blocks.append(
            MoeBlock(
                path=path,
                experts=where,
                router=_join(path, router_name or ""),
                num_experts=n,
                top_k=int(top_k),
                expert_tensors=stacked,
                router_tensors=_first_dim_tensors(router, _join(path, router_name or ""), n),
                in_list=in_list,
            )
        )
    return blocks


def _is_param(model: nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


def _routed(output: Any, n: int, k: int) -> torch.Tensor | None:
    """The experts each token was sent to, ``[tokens, k]``, from a router's output: its own
    top-k indices when it returns them, else the top-k of its ``[tokens, n]`` logits."""
    items = list(output) if isinstance(output, (tuple, list)) else [output]
    tensors = [t for t in items if isinstance(t, torch.Tensor)]
    for t in tensors:
        if not t.is_floating_point() and t.dim() >= 2 and t.shape[-1] == k and t.numel():
            return t.reshape(-1, k).long()
    for t in tensors:
        if t.is_floating_point() and t.dim() >= 2 and t.shape[-1] == n and t.numel():
            return t.reshape(-1, n).topk(k, dim=-1).indices
    return None


def expert_usage(
    model: nn.Module, blocks: Sequence[MoeBlock], calib: Sequence[ExampleInputs]
) -> dict[str, np.ndarray]:
    """How many times each expert of each block is among a token's top k, over ``calib``.

    Padded tokens (where a batch's ``attention_mask`` is 0) are not counted when the router
    sees one row per token of the batch.
    """
    counts = {b.path: np.zeros(b.num_experts, dtype=np.int64) for b in blocks}
    seen: dict[str, bool] = {b.path: False for b in blocks}
    mask: list[torch.Tensor | None] = [None]  # the current batch's tokens, flattened
    hooks = []
    for b in blocks:

        def hook(_m: nn.Module, _args: Any, output: Any, b: MoeBlock = b) -> None:
            routed = _routed(output, b.num_experts, b.top_k)
            if routed is None:
                return
            seen[b.path] = True
            real = mask[0]
            if real is not None and real.numel() == routed.shape[0]:
                routed = routed[real.to(routed.device)]
            ids = routed.reshape(-1).clamp(0, b.num_experts).cpu().numpy()
            counts[b.path] += np.bincount(ids, minlength=b.num_experts + 1)[: b.num_experts]

        hooks.append(model.get_submodule(b.router).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in calib:
                am = batch.get("attention_mask") if isinstance(batch, Mapping) else None
                mask[0] = am.reshape(-1) != 0 if isinstance(am, torch.Tensor) else None
                call_model(model, batch)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for b in blocks:
        if not seen[b.path]:
            raise UnsupportedOperationError(
                f"cannot trace the router {b.router!r} of the expert layer {b.path!r}: on the "
                f"calibration batches it never returned [tokens, {b.num_experts}] logits or "
                f"[tokens, {b.top_k}] expert indices; its forward must return them (as "
                f"transformers' routers do), or exclude the layer"
            )
    return counts


def _check_calib(calib: Any) -> list[ExampleInputs]:
    if calib is None:
        raise InputError(
            "prune_experts needs calibration batches to count how often the router picks each "
            "expert: pass calib=[batch, ...], each batch shaped like the model's inputs"
        )
    batches = check_calib(calib, "magnitude")
    return list(batches)


def prune_experts(
    model: nn.Module,
    calib: Sequence[ExampleInputs],
    *,
    ratio: float,
    exclude: Sequence[str] = (),
) -> nn.Module:
    """Remove the least used experts of every expert layer; returns a smaller copy.

    On the calibration batches ``calib``, the router of each expert layer is observed and
    every time it puts an expert among a token's top k counts as one use. In each layer the
    ``floor(num_experts * ratio)`` least used experts are removed, with their router rows
    (experts in an ``nn.ModuleList`` leave the list, the rest move up); the layer's
    ``num_experts`` and the transformers config (``num_local_experts`` / ``num_experts``)
    follow. ``model`` is not modified.

    **Approximate.** Unlike :func:`netsculpt.prune`, this step is not exact: the tokens a
    removed expert served are routed to others. The pruned model computes exactly what the
    original computes with the removed experts' router logits set to ``-inf``; the plan says
    so (``plan_of(small).meta["approximate"]``) and is not verified against the original.

    The copy carries its plan (composed with any earlier one), so :func:`netsculpt.save` and
    :func:`netsculpt.load` replay it; expert neurons can be pruned before or after with
    :func:`netsculpt.prune`.

    Args:
        model: a model with expert layers (see :func:`find_moe_blocks`).
        calib: calibration batches (a list of model inputs) on which experts are counted.
        ratio: fraction of each layer's experts removed, in [0, 1); at least ``top_k``
            experts must remain.
        exclude: expert layers (module names or ``"re:"`` patterns) left whole.

    Raises:
        UnsupportedOperationError: an expert layer whose router cannot be traced; names the
            module.
        InputError: a bad ratio, no expert layer, or a ratio leaving fewer than top_k experts.
    """
    check_model(model)
    ratio = check_ratio(ratio, "ratio")
    exclude = check_selection(model, list(exclude), "exclude")
    batches = _check_calib(calib)
    blocks = [b for b in find_moe_blocks(model) if not (exclude and match_names(exclude, b.path))]
    if not blocks:
        raise InputError(
            f"model {type(model).__name__} has no expert layer netsculpt can prune (a module "
            f"with a router and an 'experts' child: a ModuleList of experts, or stacked "
            f"[num_experts, ...] weights)" + (" outside exclude" if exclude else "")
        )
    removes = {b.path: math.floor(b.num_experts * ratio + 1e-9) for b in blocks}
    for b in blocks:
        if b.num_experts - removes[b.path] < b.top_k:
            most = (b.num_experts - b.top_k) / b.num_experts
            raise InputError(
                f"ratio={ratio:g} removes {removes[b.path]} of the {b.num_experts} experts of "
                f"{b.path!r}, leaving fewer than the {b.top_k} its router picks per token; pass "
                f"ratio<={most:g}"
            )
    usage = expert_usage(model, blocks, batches)
    plan = _plan(model, blocks, usage, removes, ratio)
    return apply(model, plan)


def _plan(
    model: nn.Module,
    blocks: Sequence[MoeBlock],
    usage: Mapping[str, np.ndarray],
    removes: Mapping[str, int],
    ratio: float,
) -> Plan:
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    tensors: dict[str, dict[int, tuple[int, ...]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    attrs: list[tuple[str, str, Any]] = []
    groups: list[GroupDecision] = []
    removed: dict[str, list[int]] = {}
    lists: list[tuple[str, int, tuple[int, ...]]] = []
    for b in blocks:
        counts = usage[b.path]
        order = np.argsort(counts, kind="stable")  # least used first; ties: lower index
        gone = sorted(int(i) for i in order[: removes[b.path]])
        kept = tuple(i for i in range(b.num_experts) if i not in set(gone))
        removed[b.path] = gone
        groups.append(GroupDecision(_join(b.path, "experts"), "experts", b.num_experts, kept))
        if not gone:
            continue
        if b.in_list:
            lists.append((b.experts, b.num_experts, kept))
        for name in (*b.expert_tensors, *b.router_tensors):
            tensors[name] = {0: kept}
            shapes[name] = tuple(state[name].shape)
        for path in (b.path, b.experts, b.router):
            module = model.get_submodule(path)
            for attr in ("num_experts", "num_local_experts"):
                if _int_attr(module, attr) == b.num_experts and is_size_attribute(attr):
                    attrs.append((path, attr, len(kept)))
    meta = {
        "step": "prune_experts",
        "ratio": ratio,
        "exact": False,
        "approximate": APPROXIMATE,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "removed_experts": removed,
        "expert_usage": {path: [int(c) for c in counts] for path, counts in usage.items()},
    }
    return Plan(
        tensors=tensors,
        shapes=shapes,
        attrs=tuple(attrs),
        groups=tuple(groups),
        meta=meta,
        lists=tuple(lists),
    )
