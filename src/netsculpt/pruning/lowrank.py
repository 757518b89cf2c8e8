"""Low-rank factorisation: a Linear or Conv layer becomes two thinner layers (truncated SVD).

It is a plan kind (``plan.lowrank``) applied after channel slicing, so it composes with
structured pruning and saves/reloads like any plan::

    small = ns.prune(model, inputs, ratio=0.3)
    smaller = ns.factorize(small, energy=0.95)       # ranks chosen per layer by energy
    ns.save(smaller, "out/")                         # plan: slices, then factorisations

The rank of each layer is the smallest that keeps ``energy`` of the squared singular
values, or ``rank_ratio`` of the full rank; a layer is factorised only when that saves at
least ``min_saving`` of its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import cast

import torch
from torch import nn

from netsculpt._checks import check_model, check_names
from netsculpt.errors import InputError, InvalidRatioError
from netsculpt.graph._arguments import check_selection, check_weights
from netsculpt.graph.analysis import match_names
from netsculpt.pruning._factorized import factorize_module, matrix
from netsculpt.pruning.apply import apply
from netsculpt.pruning.plan import Plan

__all__ = ["FactorizeConfig", "choose_ranks", "factorize", "factorize_module"]


@dataclass(frozen=True, kw_only=True)
class FactorizeConfig:
    """How to choose ranks. Give ``energy`` or ``rank_ratio``; ``modules`` limits the layers
    (names or ``"re:"`` patterns; empty: every Linear and ungrouped Conv2d)."""

    energy: float | None = 0.95
    rank_ratio: float | None = None
    modules: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_saving: float = 0.1

    def __post_init__(self) -> None:
        if (self.energy is None) == (self.rank_ratio is None):
            raise InputError("give exactly one of energy=... or rank_ratio=... to factorize")
        for name in ("energy", "rank_ratio", "min_saving"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise InvalidRatioError(
                    f"{name} must be a number, got {value!r} ({type(value).__name__})"
                )
        if self.energy is not None and not 0 < self.energy <= 1:
            raise InvalidRatioError(f"energy must be in (0, 1], got {self.energy!r}")
        if self.rank_ratio is not None and not 0 < self.rank_ratio <= 1:
            raise InvalidRatioError(f"rank_ratio must be in (0, 1], got {self.rank_ratio!r}")
        if not 0 <= self.min_saving < 1:
            raise InvalidRatioError(f"min_saving must be in [0, 1), got {self.min_saving!r}")
        object.__setattr__(self, "modules", tuple(check_names(self.modules, "modules")))
        object.__setattr__(self, "exclude", tuple(check_names(self.exclude, "exclude")))


def choose_ranks(model: nn.Module, config: FactorizeConfig) -> dict[str, int]:
    """Layer name -> rank, for the layers worth factorising under ``config``."""
    ranks: dict[str, int] = {}
    for name, module in model.named_modules():
        w = matrix(module)
        if w is None or not name:
            continue
        if config.modules and not match_names(config.modules, name):
            continue
        if config.exclude and match_names(config.exclude, name):
            continue
        out_f, in_f = w.shape
        s = torch.linalg.svdvals(w.float())
        if config.energy is not None:
            energy = torch.cumsum(s**2, 0) / (s**2).sum().clamp_min(1e-30)
            rank = int(torch.searchsorted(energy, torch.tensor(config.energy - 1e-12)).item()) + 1
        else:
            rank = max(1, math.ceil(config.rank_ratio * min(out_f, in_f)))  # type: ignore[operator]
        rank = min(rank, min(out_f, in_f))
        if rank * (in_f + out_f) <= (1 - config.min_saving) * in_f * out_f:
            ranks[name] = rank
    return ranks


def factorize(
    model: nn.Module,
    config: FactorizeConfig | None = None,
    *,
    energy: float | None = None,
    rank_ratio: float | None = None,
    modules: Sequence[str] = (),
) -> nn.Module:
    """A copy of ``model`` with its large Linear/Conv2d layers factorised by truncated SVD.

    ``model`` may already be pruned by netsculpt: the result's plan is the pruning plan
    followed by the factorisations, so ``ns.save``/``ns.load`` replay both.
    """
    check_model(model)
    if config is None:
        config = FactorizeConfig(
            energy=energy if energy is not None or rank_ratio is not None else 0.95,
            rank_ratio=rank_ratio,
            modules=tuple(check_names(modules, "modules")),
        )
    elif not isinstance(config, FactorizeConfig):
        raise InputError(
            f"config must be a FactorizeConfig or None, got {config!r} "
            f"({type(config).__name__}); e.g. factorize(model, FactorizeConfig(energy=0.9))"
        )
    elif energy is not None or rank_ratio is not None or modules:
        raise InputError(
            "give either config=FactorizeConfig(...) or energy=/rank_ratio=/modules=, not both"
        )
    check_selection(model, config.modules, "modules")
    check_selection(model, config.exclude, "exclude")
    check_weights(model)
    ranks = choose_ranks(model, config)
    if not ranks:
        raise InputError(
            "no layer is worth factorising (the ranks needed save less than "
            f"{config.min_saving:.0%} of parameters); lower energy= or rank_ratio="
        )
    shapes = {
        f"{m}.weight": tuple(cast(torch.Tensor, model.get_submodule(m).weight).shape) for m in ranks
    }
    step = Plan(
        tensors={},
        shapes=shapes,
        lowrank=tuple(ranks.items()),
        meta={"factorize": {"energy": config.energy, "rank_ratio": config.rank_ratio}},
    )
    return apply(model, step)
