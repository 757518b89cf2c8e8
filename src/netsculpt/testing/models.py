"""Small model classes for tests that need a class to build again, not a zoo entry.

:class:`TinyResidualCNN` is the smallest model with what super-networks and structural
pruning act on: a convolution followed by batch norm (one channel group shared by a
residual sum) and a residual block that can be dropped whole (an elastic depth choice).
Its layers are built in a fixed order, so ``torch.manual_seed(s)`` followed by the same
arguments gives the same weights.

>>> import torch
>>> from netsculpt.testing.models import TinyResidualCNN
>>> model = TinyResidualCNN(in_channels=1, width=16, num_classes=10)
>>> model(torch.randn(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyResidualCNN"]


class TinyResidualCNN(nn.Module):
    """Conv-BN-ReLU (``stem``), a residual block (``block``: conv-BN-ReLU-conv 1x1, added
    to its input), global average pooling, a linear classifier (``head``).

    Args:
        in_channels: channels of the input images ``[N, in_channels, H, W]``.
        width: channels of the stem and the block.
        num_classes: logits out.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 1),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.block(h)
        return self.head(h.mean((2, 3)))
