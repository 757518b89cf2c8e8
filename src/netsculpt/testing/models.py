"""Small model classes for tests that need a class to build again, not a zoo entry.

:class:`TinyResidualCNN` is the smallest model with what super-networks and structural
pruning act on: a convolution followed by batch norm (one channel group shared by a
residual sum) and a residual block that can be dropped whole (an elastic depth choice).
Its layers are built in a fixed order, so ``torch.manual_seed(s)`` followed by the same
arguments gives the same weights. :class:`LSTMClassifier` and :class:`BiGRUClassifier` are
recurrent text classifiers (the zoo's ``lstm_classifier`` and ``bigru_classifier``).

>>> import torch
>>> from netsculpt.testing.models import TinyResidualCNN
>>> model = TinyResidualCNN(in_channels=1, width=16, num_classes=10)
>>> model(torch.randn(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BiGRUClassifier", "LSTMClassifier", "TinyResidualCNN"]


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


class LSTMClassifier(nn.Module):
    """Embedding, an LSTM (``rnn``, batch first), a linear classifier on the last step.

    Args:
        vocab: token ids are in ``[0, vocab)``; the input is ``[N, T]``.
        embed: embedding width (the LSTM's input size).
        hidden: LSTM hidden units per layer.
        num_layers: stacked LSTM layers.
        num_classes: logits out.
    """

    def __init__(
        self,
        *,
        vocab: int = 128,
        embed: int = 32,
        hidden: int = 48,
        num_layers: int = 2,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1])


class BiGRUClassifier(nn.Module):
    """Embedding, a linear projection, a bidirectional GRU (``rnn``, time first) whose final
    forward and backward states (``h_n``) are concatenated into a linear classifier.

    Args:
        vocab: token ids are in ``[0, vocab)``; the input is ``[N, T]``.
        embed: embedding width.
        hidden: GRU hidden units per direction.
        num_classes: logits out.
    """

    def __init__(
        self, *, vocab: int = 128, embed: int = 32, hidden: int = 24, num_classes: int = 4
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.proj = nn.Linear(embed, embed)
        self.rnn = nn.GRU(embed, hidden, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.proj(self.embed(ids)))
        _, h_n = self.rnn(x.transpose(0, 1))
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))
