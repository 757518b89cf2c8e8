"""A fast task for precision searches, importable by name (``precision_helpers:AgreementTask``).

Score = how often a model's argmax agrees with the dense ``search_helpers.tiny_mlp``'s, on
fixed validation and test inputs; calibration batches for static int8 come from a third set.
"""

from __future__ import annotations

from typing import Any

import torch
from search_helpers import tiny_inputs, tiny_mlp
from torch import nn

import netsculpt as ns


class AgreementTask(ns.Task):
    """Agreement with the dense tiny MLP on 64 validation / 64 test inputs; records the
    type of every model it scores (``scored``)."""

    name = "agreement-task"

    def __init__(self) -> None:
        reference, _ = tiny_mlp()
        gen = torch.Generator().manual_seed(1)
        self.inputs = {
            "validation": torch.randn(64, 12, generator=gen),
            "test": torch.randn(64, 12, generator=gen),
            "train": torch.randn(4 * 32, 12, generator=gen),
        }
        with torch.no_grad():
            self.labels = {k: reference(v).argmax(-1) for k, v in self.inputs.items()}
        self.scored: list[str] = []

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        self.scored.append(type(model).__name__)
        with torch.no_grad():
            out = model(self.inputs[split])
        return float((out.argmax(-1) == self.labels[split]).float().mean())

    def example_inputs(self) -> torch.Tensor:
        return tiny_inputs()

    def calib_batches(self, n: int = 4) -> list[Any]:
        return [self.inputs["train"][i * 32 : (i + 1) * 32] for i in range(n)]
