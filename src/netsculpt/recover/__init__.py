"""Recovering accuracy after pruning: fine-tuning and distillation loops."""

from __future__ import annotations

from netsculpt.recover.budget import Budget, BudgetLike
from netsculpt.recover.callbacks import Callback
from netsculpt.recover.train import distill, finetune

__all__ = ["Budget", "BudgetLike", "Callback", "distill", "finetune"]
