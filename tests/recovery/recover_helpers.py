"""Helpers for the recovery tests: a fast synthetic task and weight snapshots."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

import netsculpt as ns
from netsculpt.tasks.base import Split, check_split


class BlobsTask(ns.Task):
    """Three Gaussian blobs in 2-D: trains in milliseconds, so the loop's mechanics are cheap."""

    name = "blobs"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
        self.y = torch.arange(3).repeat(200)
        self.x = centres[self.y] + 0.6 * torch.randn(600, 2, generator=g)

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Accuracy on points 400-499 (validation) or 500-599 (test); 0-399 train."""
        rows = slice(400, 500) if check_split(split) == "validation" else slice(500, 600)
        with torch.no_grad():
            model.eval()
            return float((model(self.x[rows]).argmax(1) == self.y[rows]).float().mean())

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randperm(400, generator=g)[:batch_size]
            yield self.x[rows], self.y[rows]


def blobs_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def damage(model: nn.Module, scale: float = 0.8, seed: int = 0) -> nn.Module:
    """Add Gaussian noise (``scale`` times each tensor's spread) to every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std() * scale)
    return model
