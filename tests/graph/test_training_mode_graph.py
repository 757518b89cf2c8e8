"""Modules only the training-mode forward runs (auxiliary heads, as in GoogLeNet and
Inception v3) are analysed too, so a pruned copy still trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netsculpt as ns
from netsculpt.testing.conformance import check_model


class _AuxNet(nn.Module):
    """An auxiliary classifier on the stem's channels, run only while training."""

    def __init__(self, *, broken_training: bool = False) -> None:
        super().__init__()
        self.broken_training = broken_training
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.aux = nn.Linear(16, 5)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.stem(x))
        out = self.head(F.relu(self.body(h)).mean((2, 3)))
        if not self.training:
            return out
        if self.broken_training:
            raise RuntimeError("this model trains only with labels")
        return out, self.aux(h.mean((2, 3)))


def test_an_auxiliary_head_follows_the_channels_it_reads() -> None:
    torch.manual_seed(0)
    model, x = _AuxNet().eval(), torch.randn(2, 3, 8, 8)
    graph = ns.analyze(model, x)
    stem = graph.group("stem")
    assert stem.prunable and "aux.weight" in stem.params
    small = ns.prune(model, x, ratio=0.5)
    assert small.aux.in_features == small.stem.out_channels < 16
    report = check_model(model, x, ratio=0.5)  # still exact in eval mode, and reloads
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    small.train()
    out, aux = small(x)  # the pruned copy still trains
    assert out.shape == aux.shape == (2, 5)
    assert not model.training  # the caller's mode is restored


def test_a_training_forward_that_cannot_be_captured_warns_and_keeps_the_eval_analysis() -> None:
    model, x = _AuxNet(broken_training=True).eval(), torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"training mode.*aux\.weight"):
        graph = ns.analyze(model, x)
    assert graph.group("stem").prunable
    assert not graph.group("aux").prunable  # unread in eval mode: it keeps its size
