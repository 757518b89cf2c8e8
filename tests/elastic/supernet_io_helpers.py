"""Tiny models for the super-network save/load and command-line tests.

``tiny_cnn`` is a factory (``supernet_io_helpers:tiny_cnn`` with this folder on
PYTHONPATH): it takes the built-in digits task's images, ``[N, 1, 8, 8]``, and returns
``(model, example_inputs)``, as the command line expects of a factory.
"""

from __future__ import annotations

import torch
from torch import nn

from netsculpt.testing.models import TinyResidualCNN


class TinyCNN(TinyResidualCNN):
    """A TinyResidualCNN on the digits task's 8x8 grey images, 10 classes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__(in_channels=1, width=width, num_classes=10)


def tiny_cnn() -> tuple[nn.Module, torch.Tensor]:
    """A TinyCNN with non-trivial batch-norm statistics, and a batch of 8x8 images."""
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8))
    return model.eval(), torch.randn(4, 1, 8, 8)


def tiny_cnn_wide() -> tuple[nn.Module, torch.Tensor]:
    """The same class at another width: another architecture."""
    torch.manual_seed(0)
    return TinyCNN(width=24).eval(), torch.randn(4, 1, 8, 8)


class TiedLM(nn.Module):
    """An embedding tied to the output projection, with an MLP in between."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.out = nn.Linear(16, 50, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.out(h + self.mlp(h))


def tied_lm() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TiedLM().eval(), torch.randint(0, 50, (2, 6))
