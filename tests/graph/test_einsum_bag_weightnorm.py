"""torch.einsum, nn.EmbeddingBag and weight-normalised layers carry channels: pruned
exactly, reloaded, with the groups and the reasons a user would expect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netsculpt as ns
from netsculpt.graph.ops.linalg import _einsum_letters
from netsculpt.testing.conformance import check_model


class _EinsumMLP(nn.Module):
    def __init__(self, equation_in: str, equation_out: str) -> None:
        super().__init__()
        self.eq = (equation_in, equation_out)
        self.w1 = nn.Parameter(torch.randn(16, 32) / 4)
        self.w2 = nn.Parameter(torch.randn(32, 4) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.einsum(self.eq[0], x, self.w1))
        return torch.einsum(self.eq[1], h, self.w2)


class _EinsumAttention(nn.Module):
    """Attention written with einsum: heads must come out as a group."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.inp = nn.Linear(6, dim)
        self.cls = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, -1, self.head_dim).unbind(2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.head_dim**0.5
        y = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, t, -1)
        return self.cls((h + self.out(y)).mean(1))


@pytest.mark.parametrize(
    "equations",
    [("bi,ih->bh", "bh,ho->bo"), ("...i,ih->...h", "...h,ho->...o"), ("bi,ih", "bh,ho")],
    ids=["explicit", "ellipsis", "implicit"],
)
def test_einsum_layers_prune_exactly(equations: tuple[str, str]) -> None:
    torch.manual_seed(0)
    model = _EinsumMLP(*equations).eval()
    x = torch.randn(3, 16)
    groups = ns.analyze(model, x).groups
    # the hidden width is named after the weights' module (the model itself)
    hidden = [g for g in groups if g.size == 32]
    assert [(g.kind, g.prunable, g.params) for g in hidden] == [("neurons", True, ("w1", "w2"))]
    report = check_model(model, x, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    assert ns.prune(model, x, ratio=0.5).w2.shape == (16, 4)


def test_einsum_attention_heads_are_a_group() -> None:
    torch.manual_seed(0)
    model = _EinsumAttention().eval()
    x = torch.randn(2, 5, 6)
    graph = ns.analyze(model, x)
    assert not graph.skipped
    heads = [g for g in graph.groups if g.kind == "heads"]
    assert [(g.size, g.prunable) for g in heads] == [(4, True)]
    report = check_model(model, x, ratio=0.5)
    assert report.params_after < report.params_before
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0


def test_einsum_letters_expand_ellipsis_right_aligned() -> None:
    assert _einsum_letters("...ij,jk->...ik", [4, 2]) == (["αβij", "jk"], "αβik")
    assert _einsum_letters("ij,jk", [2, 2]) == (["ij", "jk"], "ik")
    assert _einsum_letters("ij,jk->ik", [3, 2]) is None  # a rank the equation does not name


def test_einsum_outer_product_and_diagonal_share_one_group() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.o = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            square = torch.einsum("bi,bj->bij", h, h)
            return self.o(torch.einsum("bii->bi", square))

    torch.manual_seed(0)
    model, x = Outer().eval(), torch.randn(3, 4)
    group = ns.analyze(model, x).group("a")
    assert (group.size, group.prunable) == (8, True)
    report = check_model(model, x, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0


def test_embedding_bag_columns_follow_their_reader() -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(50, 16, mode="mean")
            self.fc = nn.Linear(16, 32)
            self.out = nn.Linear(32, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.fc(self.bag(ids))))

    torch.manual_seed(0)
    model, ids = Bag().eval(), torch.randint(0, 50, (4, 6))
    group = ns.analyze(model, ids).group("bag")
    assert (group.size, group.prunable) == (16, True)
    report = check_model(model, ids, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    small = ns.prune(model, ids, ratio=0.5)
    assert small.bag.weight.shape == (50, 8) and small.fc.in_features == 8


def test_weight_norm_layers_lose_inputs_and_keep_rows() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(2, 16, 3)
            self.b = nn.utils.parametrizations.weight_norm(nn.Conv1d(16, 16, 3))
            self.o = nn.Conv1d(16, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(F.relu(self.b(F.relu(self.a(x)))))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 2, 12)
    graph = ns.analyze(model, x)
    assert graph.group("a").prunable
    rows = graph.group("b.parametrizations.weight")
    assert not rows.prunable and "norm 0" in rows.reason
    report = check_model(model, x, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    small = ns.prune(model, x, ratio=0.5)
    assert small.b.weight.shape == (16, 8, 3)
    assert small.b.parametrizations.weight.original1.shape == (16, 8, 3)


def test_weight_standardised_convolution_keeps_its_inputs() -> None:
    class WSConv(nn.Conv2d):
        """BiT's weight standardisation: batch statistics of the weight over its inputs."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = self.weight.reshape(1, self.out_channels, -1)
            w = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=1e-6)
            return F.conv2d(x, w.reshape_as(self.weight), self.bias, padding=1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.ws = WSConv(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.ws(F.relu(self.a(x))))
            return self.head(h.mean((2, 3)))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 8, 8)
    graph = ns.analyze(model, x)
    inputs = graph.group("a")
    assert not inputs.prunable and "batch statistics" in inputs.reason
    assert graph.group("ws").prunable  # one standardised row per output channel
    report = check_model(model, x, ratio=0.5)
    assert report.params_after < report.params_before
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
