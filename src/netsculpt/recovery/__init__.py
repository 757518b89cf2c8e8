"""Recovering accuracy after pruning: fine-tuning and distillation loops, least-squares
reconstruction from calibration data, and their configs."""

from __future__ import annotations

from netsculpt.recovery.budget import Budget, BudgetLike
from netsculpt.recovery.callbacks import Callback
from netsculpt.recovery.config import DistillConfig, TrainConfig
from netsculpt.recovery.recipe import recover
from netsculpt.recovery.reconstruct import (
    ReconstructConfig,
    ReconstructResult,
    reconstruct,
    reconstruction_of,
)
from netsculpt.recovery.train import distill, finetune

__all__ = [
    "Budget",
    "BudgetLike",
    "Callback",
    "DistillConfig",
    "ReconstructConfig",
    "ReconstructResult",
    "TrainConfig",
    "distill",
    "finetune",
    "reconstruct",
    "reconstruction_of",
    "recover",
]
