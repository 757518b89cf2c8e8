"""A tiny model with batch norm and a residual block, and a task that scores agreement with
it, for the super-network search tests (importable by spawned worker processes)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

import netsculpt as ns
from netsculpt.testing.models import TinyResidualCNN


class ConvNet(TinyResidualCNN):
    """A TinyResidualCNN on 3-channel 8x8 images, 5 classes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__(in_channels=3, width=width, num_classes=5)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


class AgreementTask(ns.Task):
    """Score: agreement with a fixed labelling (the dense model's), per split; training
    batches are random images (only their inputs are used, for batch-norm statistics)."""

    name = "toy-agreement"

    def __init__(self, labeller: nn.Module) -> None:
        self.x = {"validation": images(96, 1), "test": images(96, 2)}
        with torch.no_grad():
            labeller.eval()
            self.y = {k: labeller(v).argmax(1) for k, v in self.x.items()}
        self.evaluated = 0

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        self.evaluated += 1
        model.eval()
        with torch.no_grad():
            pred = model(self.x[split]).argmax(1)
        return float((pred == self.y[split]).float().mean())

    def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[tuple[Any, Any]]:
        for i in itertools.count():
            yield images(batch_size, 100 + seed * 1000 + i), None

    def example_inputs(self) -> torch.Tensor:
        return images(4, 3)


def convnet() -> tuple[nn.Module, torch.Tensor]:
    """Factory for ``"supernet_search_helpers:convnet"``: (model, example_inputs)."""
    torch.manual_seed(0)
    return ConvNet(), images(4, 3)


def make_task() -> AgreementTask:
    """Factory for ``"supernet_search_helpers:make_task"``: agreement with ``convnet()``."""
    return AgreementTask(convnet()[0])
