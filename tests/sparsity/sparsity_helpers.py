"""Small models, a tiny task and a minimal training loop for the sparsity tests.

The loop calls the same three hooks as :func:`netsculpt.finetune` (``on_step_start``,
``after_backward`` before the optimiser step, ``on_step_end``), so the callbacks are tested
without depending on the recovery loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def mlp(seed: int = 0, sizes: Sequence[int] = (16, 32, 24, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


class BlobsTask:
    """A tiny 4-class problem on 16 features: enough for training loops to do something."""

    name = "blobs"

    def __init__(self, n: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.centres = torch.randn(4, 16, generator=g) * 2
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.x = self.centres[self.y] + torch.randn(n, 16, generator=g)

    def train_batches(self, *, batch_size: int = 32, seed: int = 0) -> Iterator[Any]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randint(0, len(self.y), (batch_size,), generator=g)
            yield self.x[rows], self.y[rows]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        with torch.no_grad():
            return float((model(self.x).argmax(-1) == self.y).float().mean())


def loop(
    model: nn.Module,
    task: Any,
    steps: int,
    *,
    lr: float = 1e-2,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
    progress: bool = False,
    weight_decay: float = 1e-2,
) -> nn.Module:
    """Minimal stand-in for ns.finetune: AdamW with weight decay (which would move zeros)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches = task.train_batches(batch_size=32, seed=seed)
    model.train()
    for step in range(steps):
        for cb in callbacks:
            if hasattr(cb, "on_step_start"):
                cb.on_step_start(step, model)
        x, y = next(batches)
        loss = task.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        for cb in callbacks:
            if hasattr(cb, "after_backward"):
                cb.after_backward(step, model)
        optimizer.step()
        for cb in callbacks:
            if hasattr(cb, "on_step_end"):
                cb.on_step_end(step, model)
    return model
