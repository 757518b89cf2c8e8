"""A Linear or Conv2d layer as two thinner layers: the truncated SVD of its weight.

The building block of low-rank plans (``plan.lowrank``), shared by
:func:`netsculpt.pruning.apply.apply`, which replays them, and
:mod:`netsculpt.pruning.lowrank`, which chooses the ranks.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from netsculpt.errors import InputError

__all__ = ["factorize_module", "matrix"]


def matrix(module: nn.Module) -> torch.Tensor | None:
    """The weight of a Linear or ungrouped Conv2d as a matrix (out, in); None otherwise."""
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return module.weight.detach().reshape(module.out_channels, -1)
    return None


def factorize_module(module: nn.Module, rank: int) -> nn.Sequential:
    """Two layers whose product is the rank-``rank`` truncated SVD of ``module``'s weight."""
    w = matrix(module)
    if w is None:
        raise InputError(
            f"cannot factorise a {type(module).__name__}; only Linear and ungrouped Conv2d"
        )
    u, s, vh = torch.linalg.svd(w.float(), full_matrices=False)
    root = s[:rank].sqrt()
    first_w = (root[:, None] * vh[:rank]).to(w.dtype)
    second_w = (u[:, :rank] * root[None, :]).to(w.dtype)
    bias = getattr(module, "bias", None)
    first: nn.Linear | nn.Conv2d
    second: nn.Linear | nn.Conv2d
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False)
        second = nn.Linear(rank, module.out_features, bias=bias is not None)
    else:
        conv = cast(nn.Conv2d, module)
        first = nn.Conv2d(
            conv.in_channels,
            rank,
            cast(tuple[int, int], conv.kernel_size),
            stride=cast(tuple[int, int], conv.stride),
            padding=cast(tuple[int, int], conv.padding),
            dilation=cast(tuple[int, int], conv.dilation),
            bias=False,
            padding_mode=conv.padding_mode,
        )
        second = nn.Conv2d(rank, conv.out_channels, 1, bias=bias is not None)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if bias is not None and second.bias is not None:
            second.bias.copy_(bias.detach())
    out = nn.Sequential(first, second).to(device=w.device)
    out.train(module.training)
    return out
