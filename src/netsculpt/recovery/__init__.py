"""Recovering accuracy after pruning: fine-tuning and distillation loops."""

from __future__ import annotations

from netsculpt.recovery.budget import Budget, BudgetLike
from netsculpt.recovery.callbacks import Callback
from netsculpt.recovery.train import distill, finetune

__all__ = ["Budget", "BudgetLike", "Callback", "distill", "finetune"]
