"""Mask criteria: exact magnitude counts, ERK ratios, random masks, N:M groups, drop-and-grow."""

from __future__ import annotations

import math

import pytest
import torch
from sparsity_helpers import TinyConvNet, mlp
from torch import nn

from netsculpt.errors import SparsityError
from netsculpt.sparsity import (
    Masks,
    erk_densities,
    magnitude_masks,
    nm_mask,
    nm_masks,
    random_masks,
    regrow,
    select_parameters,
)


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.97])
def test_global_magnitude_reaches_exact_sparsity(sparsity: float) -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), sparsity, scope="global")
    total = masks.numel()
    assert total - masks.kept() == round(sparsity * total)
    # every pruned weight is no larger than every kept one
    pruned = torch.cat([model.get_parameter(n).detach().abs()[~m] for n, m in masks.items()])
    kept = torch.cat([model.get_parameter(n).detach().abs()[m] for n, m in masks.items()])
    if len(pruned) and len(kept):
        assert pruned.max() <= kept.min()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_layerwise_magnitude_reaches_exact_sparsity_in_every_layer(sparsity: float) -> None:
    model = TinyConvNet()
    masks = magnitude_masks(model, Masks.dense(model), sparsity, scope="layer")
    for name, mask in masks.items():
        assert mask.numel() - int(mask.sum()) == round(sparsity * mask.numel()), name


def test_rising_sparsity_never_revives_pruned_weights() -> None:
    model = mlp()
    first = magnitude_masks(model, Masks.dense(model), 0.5)
    with torch.no_grad():  # make pruned weights large: they must stay pruned anyway
        for n, m in first.items():
            model.get_parameter(n)[~m] = 100.0
    second = magnitude_masks(model, first, 0.7)
    for n in first:
        assert not torch.any(second[n] & ~first[n])
    assert second.numel() - second.kept() == round(0.7 * second.numel())


def test_erk_formula_small_layers_denser_total_matches() -> None:
    shapes = {"a": (64, 32), "b": (256, 256), "c": (10, 256), "conv": (32, 16, 3, 3)}
    density = 0.2
    d = erk_densities(shapes, density)
    n = {k: math.prod(s) for k, s in shapes.items()}
    kept = sum(d[k] * n[k] for k in shapes)
    assert kept == pytest.approx(density * sum(n.values()), rel=1e-9)
    # density proportional to (sum of dims / product of dims) for layers below 1
    raw = {k: sum(s) / math.prod(s) for k, s in shapes.items()}
    eps = {k: d[k] / raw[k] for k in shapes if d[k] < 1}
    assert max(eps.values()) == pytest.approx(min(eps.values()))
    assert d["a"] > d["b"]
    assert d["c"] > d["b"]


def test_erk_caps_layers_at_dense_and_resolves() -> None:
    shapes = {"tiny": (2, 2), "big": (512, 512)}
    d = erk_densities(shapes, 0.5)
    assert d["tiny"] == 1.0
    kept = d["tiny"] * 4 + d["big"] * 512 * 512
    assert kept == pytest.approx(0.5 * (4 + 512 * 512))
    assert d["big"] < 0.5


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_random_masks_exact_counts_and_seeded(distribution: str) -> None:
    model = mlp(sizes=(64, 128, 128, 10))
    names = select_parameters(model)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    masks = random_masks(model, names, 0.9, distribution=distribution, generator=g1)
    again = random_masks(model, names, 0.9, distribution=distribution, generator=g2)
    assert all(torch.equal(masks[n], again[n]) for n in names)
    assert masks.sparsity == pytest.approx(0.9, abs=len(names) / masks.numel())
    if distribution == "erk":
        ls = masks.layer_sparsity()
        assert ls["4.weight"] < ls["2.weight"]  # the small head is denser than 128x128


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (3, 4), (4, 4)])
def test_nm_pattern_holds_in_every_group_linear(n: int, m: int) -> None:
    w = torch.randn(12, 32)
    mask = nm_mask(w, n, m)
    groups = mask.reshape(12, 32 // m, m)
    assert torch.all(groups.sum(-1) == n)
    # kept weights are the largest in their group
    aw = w.abs().reshape(12, 32 // m, m)
    kept_min = torch.where(groups, aw, torch.full_like(aw, math.inf)).min(-1).values
    pruned_max = torch.where(~groups, aw, torch.full_like(aw, -1.0)).max(-1).values
    assert torch.all(kept_min >= pruned_max)


def test_nm_pattern_runs_along_input_channels_of_a_conv() -> None:
    w = torch.randn(6, 8, 3, 3)
    mask = nm_mask(w, 2, 4)
    assert mask.shape == w.shape
    per_group = mask.permute(0, 2, 3, 1).reshape(6, 3, 3, 2, 4).sum(-1)
    assert torch.all(per_group == 2)


def test_nm_skips_layers_that_do_not_fit_and_says_why() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 4), nn.Conv2d(4, 4, 3, groups=4))
    masks, skipped = nm_masks(model, select_parameters(model), 2, 4)
    assert list(masks) == ["1.weight"]
    assert "not a multiple of m=4" in skipped["0.weight"]
    assert "grouped" in skipped["2.weight"]
    with pytest.raises(SparsityError, match="m=4"):
        nm_mask(torch.randn(3, 6), 2, 4)


def test_regrow_keeps_counts_moves_weights_and_grows_largest_gradients() -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.8, scope="layer")
    masks.apply(model)
    grads = {n: torch.randn(model.get_parameter(n).shape) for n in masks}
    new, grown_masks = regrow(model, masks, 0.3, grads)
    for name in masks:
        old, now = masks[name], new[name]
        assert int(now.sum()) == int(old.sum())
        k = math.floor(0.3 * int(old.sum()))
        grown = now & ~old
        assert 0 < int(grown.sum()) <= k
        assert int(grown_masks[name].sum()) == k  # counts weights dropped and grown back too
        assert torch.all(now[grown_masks[name]])
        # grown positions have the largest |grad| among what was not kept after the drop
        candidates = ~(now & old)
        g = grads[name].abs()
        threshold = g[grown].min()
        not_grown = candidates & ~now
        assert torch.all(g[not_grown] <= threshold)


def test_regrow_random_is_seeded_and_keeps_counts() -> None:
    model = mlp()
    masks = magnitude_masks(model, Masks.dense(model), 0.5)
    a, _ = regrow(model, masks, 0.2, None, generator=torch.Generator().manual_seed(1))
    b, _ = regrow(model, masks, 0.2, None, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[n], b[n]) for n in masks)
    assert a.kept() == masks.kept()
