"""Iterative structured pruning: several small plan / apply / recover steps.

Removing width in small steps with recovery in between usually loses less than one
large cut. Each step prunes the current model by the same fraction, so that after
``steps`` steps ``ratio`` of every group's width is gone; recovery distils from the
original model (or fine-tunes). The result carries the composed plan, so it saves and
reloads on the original architecture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import InputError
from netsculpt.graph._arguments import (
    check_bool,
    check_model_and_inputs,
    check_selection,
    check_weights,
)
from netsculpt.pruning.apply import apply
from netsculpt.pruning.config import PruneConfig, RatioMap, resolve_config
from netsculpt.pruning.importance import criterion_info
from netsculpt.pruning.planner import plan

__all__ = ["iterative_prune"]


def iterative_prune(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: PruneConfig | None = None,
    *,
    task: Any,
    ratio: float | Mapping[str, float] | None = None,
    importance: str | None = None,
    steps: int = 3,
    budget_per_step: Any = 100,
    recovery: str = "distill",
    progress: bool = False,
) -> nn.Module:
    """Prune ``config.ratio`` of every group's width in ``steps`` steps, recovering after each.

    Args:
        model: the trained model; it is not modified (it is the teacher when distilling).
        example_inputs: as for :func:`netsculpt.plan`.
        config: the pruning options (:class:`netsculpt.PruneConfig`); its ``ratio`` is the
            overall fraction removed, its ``remove_blocks`` are removed in the first step,
            and step ``i`` plans with ``seed + i``.
        task: an ``ns.Task`` with training data (``train_batches``) for recovery, and
            calibration batches for a criterion that needs them.
        ratio: replaces ``config.ratio``: the overall fraction removed, in [0, 1), or a
            mapping from group names to such fractions.
        importance: replaces ``config.importance``.
        steps: number of prune/recover rounds.
        budget_per_step: recovery budget of each round (steps, or "30s").
        recovery: ``"distill"`` (from the original model) or ``"finetune"``.
    """
    from netsculpt.recovery.budget import Budget
    from netsculpt.recovery.config import DistillConfig, TrainConfig
    from netsculpt.recovery.train import distill, finetune
    from netsculpt.tasks.base import check_task

    config = resolve_config(config, ratio=ratio, importance=importance, caller="ns.iterative_prune")
    check_model_and_inputs(model, example_inputs)
    check_task(task, caller="iterative_prune")
    total = config.ratio
    if not any(total.values() if isinstance(total, Mapping) else [total]):
        raise InputError(
            "iterative_prune(ratio=0) would remove nothing and only train; pass the fraction "
            "of width to remove, e.g. ratio=0.5, or call ns.finetune to train alone"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    Budget.parse(budget_per_step)
    if recovery not in ("distill", "finetune"):
        raise InputError(f"recovery must be 'distill' or 'finetune', got {recovery!r}")
    check_selection(model, list(config.exclude), "exclude")
    check_bool(progress, "progress")
    check_weights(model)

    def per_step(r: float) -> float:
        return 1 - (1 - r) ** (1 / steps)

    step_ratio: float | RatioMap = (
        RatioMap({k: per_step(v) for k, v in total.items()})
        if isinstance(total, Mapping)
        else per_step(total)
    )
    current = model
    calib = task.calib_batches() if criterion_info(config.importance).needs_calib else None
    for i in range(steps):
        step_config = dataclasses.replace(
            config,
            ratio=step_ratio,
            seed=config.seed + i,
            remove_blocks=config.remove_blocks if i == 0 else (),
        )
        step_plan = plan(current, example_inputs, step_config, calib=calib)
        current = apply(current, step_plan)
        if recovery == "distill":
            current = distill(
                current,
                model,
                task,
                budget_per_step,
                DistillConfig(seed=config.seed + i),
                progress=progress,
            )
        else:
            current = finetune(
                current,
                task,
                budget_per_step,
                TrainConfig(seed=config.seed + i),
                progress=progress,
            )
    return current
