"""How masks are chosen: magnitude (global or per layer), random with ERK ratios, N:M groups,
and the drop-and-grow update of prune-and-regrow training.

Every function here is pure: it reads weights (or gradients) and returns new :class:`Masks`;
applying them is the caller's business. Counts are exact: a sparsity ``s`` over ``n`` weights
zeroes ``round(s * n)`` of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from netsculpt.errors import SparsityError
from netsculpt.sparsity.masks import Masks, stored_tensor

__all__ = [
    "erk_densities",
    "magnitude_masks",
    "nm_mask",
    "nm_masks",
    "nm_skip_reason",
    "random_masks",
    "regrow",
]

Scope = Literal["global", "layer"]


def _scores(model: nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    """|w| for kept weights, -1 for weights already masked (so they are pruned first)."""
    out = {}
    for name, mask in masks.items():
        w = stored_tensor(model, name).detach().abs().float()
        out[name] = torch.where(mask.to(w.device), w, torch.full_like(w, -1.0)).cpu()
    return out


def _keep_top(scores: torch.Tensor, n_zero: int) -> torch.Tensor:
    """Boolean mask keeping all but the ``n_zero`` lowest scores (ties broken by position)."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_zero > 0:
        # a stable sort makes the choice among equal scores deterministic
        order = torch.sort(flat, stable=True).indices
        keep[order[:n_zero]] = False
    return keep.reshape(scores.shape)


def magnitude_masks(
    model: nn.Module, masks: Masks, sparsity: float, *, scope: Scope = "global"
) -> Masks:
    """Masks that zero the smallest-magnitude weights until ``sparsity`` is reached.

    Weights already masked in ``masks`` count as smallest, so a rising sparsity never revives
    a pruned weight. ``scope="global"`` ranks all covered weights together (``round(s * N)``
    zeros in all); ``scope="layer"`` gives every layer the same sparsity
    (``round(s * n_l)`` zeros in each).
    """
    scores = _scores(model, masks)
    if scope == "layer":
        return Masks({n: _keep_top(s, round(sparsity * s.numel())) for n, s in scores.items()})
    if scope != "global":
        raise SparsityError(f"scope={scope!r} is not known; pass scope='global' or scope='layer'")
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1) for n in names]) if names else torch.zeros(0)
    keep = _keep_top(flat, round(sparsity * flat.numel()))
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start : start + size].reshape(scores[n].shape)
        start += size
    return Masks(out)


def erk_densities(
    shapes: Mapping[str, Sequence[int]], density: float, *, power_scale: float = 1.0
) -> dict[str, float]:
    """Per-layer densities from Erdős–Rényi-Kernel (Evci et al., RigL), overall ``density``.

    A layer's density is ``eps * (sum(shape) / prod(shape)) ** power_scale``: for a linear
    layer ``(n_in + n_out) / (n_in * n_out)``, for a convolution the kernel sizes are added in
    too. ``eps`` is chosen so that the kept weights total ``density * N``; a layer whose density
    would exceed one is kept dense and ``eps`` is solved again over the others. Small layers
    thus come out denser than large ones.
    """
    if not 0.0 < density <= 1.0:
        raise SparsityError(f"density={density!r} must be in (0, 1]; pass 1 - sparsity")
    dense: set[str] = set()
    while True:
        divisor = 0.0
        rhs = 0.0
        raw: dict[str, float] = {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            if name in dense:
                rhs -= n * (1.0 - density)
            else:
                rhs += n * density
                raw[name] = (sum(shape) / n) ** power_scale
                divisor += raw[name] * n
        if not raw:
            break
        eps = rhs / divisor
        over = [name for name, r in raw.items() if r * eps > 1.0]
        if not over:
            break
        dense.update(over)
    return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def random_masks(
    model: nn.Module,
    names: Sequence[str],
    sparsity: float,
    *,
    distribution: Literal["erk", "uniform"] = "erk",
    generator: torch.Generator | None = None,
) -> Masks:
    """Random masks over ``names``, layer ratios from ERK (default) or uniform.

    Each layer keeps exactly ``round(density_l * n_l)`` weights chosen uniformly at random.
    """
    shapes = {n: tuple(stored_tensor(model, n).shape) for n in names}
    if distribution == "erk":
        densities = erk_densities(shapes, 1.0 - sparsity)
    elif distribution == "uniform":
        densities = {n: 1.0 - sparsity for n in names}
    else:
        raise SparsityError(
            f"distribution={distribution!r} is not known; pass distribution='erk' or 'uniform'"
        )
    out = {}
    for n, shape in shapes.items():
        size = math.prod(shape)
        n_keep = min(size, round(densities[n] * size))
        order = torch.randperm(size, generator=generator)
        keep = torch.zeros(size, dtype=torch.bool)
        keep[order[:n_keep]] = True
        out[n] = keep.reshape(shape)
    return Masks(out)


def _nm_view(weight: torch.Tensor, m: int) -> torch.Tensor:
    """The weight with its input dimension last, in rows of ``m`` consecutive inputs."""
    moved = weight.movedim(1, -1) if weight.dim() > 2 else weight
    return moved.reshape(-1, m)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude weights in every group of ``m`` consecutive inputs.

    Groups run along the input dimension (dimension 1: ``in_features`` of a linear layer,
    input channels of a convolution), the layout that 2:4 sparse tensor cores expect. The
    input dimension must be a multiple of ``m``.
    """
    if weight.dim() < 2 or weight.shape[1] % m != 0:
        raise SparsityError(
            f"a weight of shape {tuple(weight.shape)} cannot be split into groups of m={m} along "
            f"its input dimension; exclude this layer or pick an m that divides "
            f"{weight.shape[1] if weight.dim() > 1 else 1}"
        )
    groups = _nm_view(weight.detach().abs().float(), m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    if weight.dim() > 2:
        moved_shape = weight.movedim(1, -1).shape
        return keep.reshape(moved_shape).movedim(-1, 1).contiguous()
    return keep.reshape(weight.shape)


def nm_masks(
    model: nn.Module, names: Sequence[str], n: int, m: int
) -> tuple[Masks, dict[str, str]]:
    """N:M masks for every named weight that fits, and ``{name: reason}`` for those that do not."""
    out: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for name in names:
        reason = nm_skip_reason(model, name, m)
        if reason is not None:
            skipped[name] = reason
        else:
            out[name] = nm_mask(stored_tensor(model, name), n, m)
    return Masks(out), skipped


def nm_skip_reason(model: nn.Module, name: str, m: int) -> str | None:
    """Why the weight ``name`` cannot take an N:M mask with group size ``m`` (None: it can)."""
    w = stored_tensor(model, name)
    module = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    if getattr(module, "groups", 1) != 1:
        return "grouped convolution: its input groups are too small for N:M"
    if w.shape[1] % m != 0:
        return f"input dimension {w.shape[1]} is not a multiple of m={m}"
    return None


def regrow(
    model: nn.Module,
    masks: Masks,
    fraction: float,
    grads: Mapping[str, torch.Tensor] | None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Masks, Masks]:
    """One drop-and-grow update (RigL; SET when ``grads`` is None): per layer, drop the
    ``k = floor(fraction * kept)`` smallest-magnitude kept weights, then grow ``k`` of the
    weights not kept after the drop, those with the largest gradient magnitude (or random
    ones without gradients). The number of kept weights per layer is unchanged.

    Returns the new masks and the grown positions (which a caller sets to zero, as RigL
    does; a weight dropped and grown back in the same update counts as grown).
    """
    out, grown_out = {}, {}
    for name, mask in masks.items():
        mask = mask.cpu()
        n_kept = int(mask.sum())
        k = min(math.floor(fraction * n_kept), mask.numel() - n_kept)
        if k <= 0:
            out[name] = mask
            grown_out[name] = torch.zeros_like(mask)
            continue
        w = stored_tensor(model, name).detach().abs().float().cpu()
        flat_mask = mask.reshape(-1)
        score = torch.where(flat_mask, w.reshape(-1), torch.full_like(w.reshape(-1), math.inf))
        drop = torch.sort(score, stable=True).indices[:k]
        after_drop = flat_mask.clone()
        after_drop[drop] = False
        if grads is not None and name in grads:
            g = grads[name].detach().abs().float().cpu().reshape(-1)
        else:
            g = torch.rand(mask.numel(), generator=generator)
        # weights kept after the drop cannot be grown; dropped ones may come back
        g = torch.where(after_drop, torch.full_like(g, -math.inf), g)
        grow = torch.sort(g, descending=True, stable=True).indices[:k]
        grown = torch.zeros_like(flat_mask)
        grown[grow] = True
        out[name] = (after_drop | grown).reshape(mask.shape)
        grown_out[name] = grown.reshape(mask.shape)
    return Masks(out), Masks(grown_out)
