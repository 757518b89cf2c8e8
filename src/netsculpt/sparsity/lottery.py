"""Iterative magnitude pruning with weight rewinding (lottery tickets).

Frankle & Carbin, "The Lottery Ticket Hypothesis" (2019), rewind to the initialisation;
Frankle et al., "Stabilizing the Lottery Ticket Hypothesis" (2019), rewind to the weights after
a few early steps, which is what makes tickets appear in larger networks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netsculpt.errors import SparsityError
from netsculpt.sparsity.callbacks import RewindCapture
from netsculpt.sparsity.config import LotteryTicketConfig
from netsculpt.sparsity.criteria import magnitude_masks
from netsculpt.sparsity.masks import MaskCallback, Masks, fold

__all__ = ["LotteryOutcome", "reinitialize", "rewind", "run_lottery"]

Fit = Callable[[nn.Module, int, Sequence[Any]], nn.Module]


@dataclass
class LotteryOutcome:
    """The trained ticket and what was learnt on the way."""

    model: nn.Module
    masks: Masks
    rewound: dict[str, torch.Tensor]
    steps: int
    history: list[tuple[int, float]] = field(default_factory=list)
    control: nn.Module | None = None


def round_sparsities(sparsity: float, rounds: int) -> list[float]:
    """Sparsity after each round: each round prunes the same fraction of what is left."""
    return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds + 1)]


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor], masks: Masks) -> nn.Module:
    """Load ``state`` into ``model`` and zero the masked weights: kept weights take their
    rewound values, pruned ones stay zero."""
    model.load_state_dict(state)
    return masks.apply(model)


@torch.no_grad()
def reinitialize(model: nn.Module, *, seed: int) -> nn.Module:
    """Draw fresh weights for every layer that has ``reset_parameters`` (in place)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


def run_lottery(
    model: nn.Module, config: LotteryTicketConfig, budget: int, fit: Fit, *, seed: int
) -> LotteryOutcome:
    """Find and train a lottery ticket of ``model`` (trained in place: pass a copy).

    Trains densely for ``budget`` steps (capturing the weights after ``config.rewind_step``
    steps), then for each round prunes by magnitude among the kept weights, rewinds and trains
    ``budget - rewind_step`` steps, so that every trained network has seen ``budget`` steps
    counted from the initialisation.
    """
    if config.rewind_step >= budget:
        raise SparsityError(
            f"LotteryTicketConfig(rewind_step={config.rewind_step}) is not before the end of "
            f"training (budget={budget}); pass a rewind_step of a few percent of the budget, "
            f"e.g. rewind_step={max(1, budget // 20)}"
        )
    capture = RewindCapture(config.rewind_step)
    masks = Masks.dense(model, include=config.include, exclude=config.exclude)
    masks.apply(model)
    trained = fit(model, budget, [capture])
    assert capture.state is not None  # the capture step lies within the budget
    rewound = capture.state
    steps = budget
    history: list[tuple[int, float]] = []
    ticket = trained
    for target in round_sparsities(config.sparsity, config.rounds):
        masks = magnitude_masks(ticket, masks, target, scope=config.scope)
        ticket = rewind(copy.deepcopy(trained), rewound, masks)
        ticket = fit(ticket, budget - config.rewind_step, [MaskCallback(masks)])
        steps += budget - config.rewind_step
        history.append((steps, masks.sparsity))
    fold(ticket)
    masks.apply(ticket)
    control = None
    if config.control:
        control = reinitialize(copy.deepcopy(trained), seed=seed + 1_000_003)
        masks.apply(control)
        control = fit(control, budget, [MaskCallback(masks)])
        fold(control)
        masks.apply(control)
    rewound_masked = {k: v.clone() for k, v in rewound.items()}
    for name, mask in masks.items():
        if name in rewound_masked:
            rewound_masked[name] = rewound_masked[name] * mask.to(rewound_masked[name].dtype)
    return LotteryOutcome(
        model=ticket,
        masks=masks,
        rewound=rewound_masked,
        steps=steps,
        history=history,
        control=control,
    )
