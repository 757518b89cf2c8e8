"""The recovery step of a search (and of any pipeline): which loop, with which options.

:func:`recover` trains a pruned model in place for a budget, choosing the loop from one
config value: a :class:`~netsculpt.DistillConfig` distils it from the teacher (the dense
model), a plain :class:`~netsculpt.TrainConfig` fine-tunes it on the task's loss. Without a
config it takes the task's own recipe (:meth:`netsculpt.Task.recovery_config`), else the
defaults (``DistillConfig()`` with a teacher, ``TrainConfig()`` without). A task without
training data is returned unchanged, untrained.

The dependency runs one way: recovery reads tasks; a task names its recipe as a config
value and never imports a training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from netsculpt._checks import check_model
from netsculpt.errors import InputError
from netsculpt.recovery.budget import Budget, BudgetLike
from netsculpt.recovery.callbacks import Callback
from netsculpt.recovery.config import DistillConfig, TrainConfig
from netsculpt.recovery.train import distill, finetune
from netsculpt.tasks.base import Task, check_task

__all__ = ["StepCounter", "has_training_data", "recover", "recovery_config_of"]


class StepCounter(Callback):
    """Counts the optimiser steps of a training run (``steps`` after it ends)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.steps += 1


def has_training_data(task: Any) -> bool:
    """Whether ``task`` can be trained on: a :class:`Task` that overrides
    ``train_batches``, or a duck-typed task with a ``train_batches`` method."""
    if isinstance(task, Task):
        return task.has_training_data
    return callable(getattr(task, "train_batches", None))


def recovery_config_of(task: Any, *, distill: bool) -> TrainConfig:
    """The task's own recipe (``task.recovery_config(distill=...)``) or the defaults.

    Raises:
        InputError: the task's ``recovery_config`` returned something else than a config,
            or a ``DistillConfig`` when there is no teacher to distil from.
    """
    hook = getattr(task, "recovery_config", None)
    chosen = hook(distill=distill) if callable(hook) else None
    if chosen is None:
        return DistillConfig() if distill else TrainConfig()
    name = getattr(task, "name", type(task).__name__)
    if not isinstance(chosen, TrainConfig):
        raise InputError(
            f"task {name!r}: recovery_config(distill={distill}) returned "
            f"{type(chosen).__name__}, not a TrainConfig or DistillConfig (or None for "
            f"netsculpt's defaults)"
        )
    if isinstance(chosen, DistillConfig) and not distill:
        raise InputError(
            f"task {name!r}: recovery_config(distill=False) returned a DistillConfig, but "
            f"there is no teacher; return a TrainConfig when distill is False"
        )
    return chosen


def recover(
    model: nn.Module,
    task: Any,
    budget: BudgetLike,
    *,
    teacher: nn.Module | None = None,
    config: TrainConfig | None = None,
    progress: bool = False,
    callbacks: Sequence[Any] = (),
) -> nn.Module:
    """Train ``model`` in place to recover accuracy after pruning; return it.

    ``config`` picks the loop: a :class:`~netsculpt.DistillConfig` runs
    :func:`netsculpt.distill` from ``teacher``; a :class:`~netsculpt.TrainConfig` runs
    :func:`netsculpt.finetune` (the teacher is then not used). ``None`` takes
    :func:`recovery_config_of` the task. A task without training data returns ``model``
    untrained (a ``StepCounter`` among ``callbacks`` then reads 0).

    Raises:
        InputError: a model or teacher that is not a module, a bad budget (checked even
            when there is nothing to train), or a ``DistillConfig`` without a teacher.
        TrainingError, DivergenceError: as :func:`netsculpt.finetune` and
            :func:`netsculpt.distill`.
    """
    try:
        check_model(model)
        if teacher is not None:
            check_model(teacher, what="teacher")
        Budget.parse(budget)
    except InputError as exc:
        raise type(exc)(f"recover: {exc}") from None
    check_task(task, caller="recover")
    if config is not None and not isinstance(config, TrainConfig):
        raise InputError(
            f"recover: config must be a TrainConfig or DistillConfig (or None for the "
            f"task's recipe), got {type(config).__name__}; e.g. config=DistillConfig()"
        )
    if not has_training_data(task):
        return model
    chosen = config if config is not None else recovery_config_of(task, distill=teacher is not None)
    if isinstance(chosen, DistillConfig):
        if teacher is None:
            raise InputError(
                "recover: a DistillConfig needs teacher=<the dense model>; pass it, or a "
                "TrainConfig to fine-tune on the task loss alone"
            )
        return distill(model, teacher, task, budget, chosen, progress=progress, callbacks=callbacks)
    return finetune(model, task, budget, chosen, progress=progress, callbacks=callbacks)
