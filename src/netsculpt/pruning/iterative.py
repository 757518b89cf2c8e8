"""Iterative structured pruning: several small plan / apply / recover steps.

Removing width in small steps with recovery in between usually loses less than one
large cut. Each step prunes the current model by the same fraction, so that after
``steps`` steps ``ratio`` of every group's width is gone; recovery distils from the
original model (or fine-tunes). The result carries the composed plan, so it saves and
reloads on the original architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from netsculpt._checks import check_int
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError
from netsculpt.graph._arguments import (
    check_bool,
    check_model_and_inputs,
    check_selection,
    check_weights,
)
from netsculpt.pruning.apply import apply
from netsculpt.pruning.importance import get_importance
from netsculpt.pruning.planner import _check_ratio, plan

__all__ = ["iterative_prune"]


def iterative_prune(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    task: Any,
    ratio: float,
    steps: int = 3,
    budget_per_step: Any = 100,
    recovery: str = "distill",
    importance: str = "magnitude",
    exclude: Sequence[str] = (),
    round_to: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Prune ``ratio`` of every group's width in ``steps`` steps, recovering after each.

    Args:
        model: the trained model; it is not modified (it is the teacher when distilling).
        example_inputs: as for :func:`netsculpt.plan`.
        task: an ``ns.Task`` with training data (``train_batches``) for recovery.
        ratio: the overall fraction removed, in [0, 1).
        steps: number of prune/recover rounds.
        budget_per_step: recovery budget of each round (steps, or "30s").
        recovery: ``"distill"`` (from the original model) or ``"finetune"``.
    """
    from netsculpt.recovery.budget import Budget
    from netsculpt.recovery.train import distill, finetune
    from netsculpt.tasks.base import check_task

    check_model_and_inputs(model, example_inputs)
    check_task(task, caller="iterative_prune")
    total = _check_ratio(ratio, "ratio")
    if total == 0:
        raise InputError(
            "iterative_prune(ratio=0) would remove nothing and only train; pass the fraction "
            "of width to remove, e.g. ratio=0.5, or call ns.finetune to train alone"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    Budget.parse(budget_per_step)
    if recovery not in ("distill", "finetune"):
        raise InputError(f"recovery must be 'distill' or 'finetune', got {recovery!r}")
    get_importance(importance)
    exclude = check_selection(model, exclude, "exclude")
    check_int(round_to, "round_to", minimum=1)
    check_int(seed, "seed", minimum=0)
    check_bool(progress, "progress")
    check_weights(model)

    per_step = 1 - (1 - total) ** (1 / steps)
    current = model
    calib = task.calib_batches() if importance in ("taylor", "activation") else None
    for i in range(steps):
        step_plan = plan(
            current,
            example_inputs,
            ratio=per_step,
            importance=importance,
            exclude=exclude,
            round_to=round_to,
            calib=calib,
            seed=seed + i,
        )
        current = apply(current, step_plan)
        if recovery == "distill":
            current = distill(
                current, model, task, budget_per_step, seed=seed + i, progress=progress
            )
        else:
            current = finetune(current, task, budget_per_step, seed=seed + i, progress=progress)
    return current
