"""The one place where sparsity methods train: :func:`netsculpt.finetune` with callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def train(
    model: nn.Module,
    task: Any,
    steps: int,
    *,
    lr: float,
    seed: int,
    callbacks: Sequence[Any],
    progress: bool,
) -> nn.Module:
    """Train ``model`` for ``steps`` optimiser steps on ``task`` and return the trained model."""
    from netsculpt.recovery.config import TrainConfig
    from netsculpt.recovery.train import finetune

    config = TrainConfig(lr=lr, seed=seed)
    out = finetune(model, task, steps, config, callbacks=tuple(callbacks), progress=progress)
    return out if isinstance(out, nn.Module) else getattr(out, "model", model)
