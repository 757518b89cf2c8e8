"""A fused q/k/v projection viewed as [3, heads, head_dim] and taken apart (timm's ViT,
many hand-written attentions): its heads are a prunable group, pruned exactly."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netsculpt as ns
from netsculpt.testing.conformance import check_model


class _FusedAttention(nn.Module):
    def __init__(self, dim: int = 32, num_heads: int = 4, *, unbind: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.unbind = unbind
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0) if self.unbind else (qkv[0], qkv[1], qkv[2])
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


class _Net(nn.Module):
    def __init__(self, *, unbind: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 32)
        self.norm = nn.LayerNorm(32)
        self.attn = _FusedAttention(unbind=unbind)
        self.cls = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.attn(self.norm(h))
        return self.cls(h.mean(1))


@pytest.mark.parametrize("unbind", [True, False], ids=["unbind", "select"])
def test_fused_qkv_heads_are_a_prunable_group(unbind: bool) -> None:
    torch.manual_seed(0)
    model, x = _Net(unbind=unbind).eval(), torch.randn(2, 5, 6)
    graph = ns.analyze(model, x)
    heads = graph.group("attn")
    assert (heads.kind, heads.size, heads.prunable, heads.unit_width) == ("heads", 4, True, 8)
    assert not graph.skipped
    report = check_model(model, x, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    small = ns.prune(model, x, ratio=0.5)
    # two heads of eight channels left in each of q, k and v; the code's head count follows
    assert small.attn.qkv.out_features == 3 * 2 * 8 and small.attn.proj.in_features == 16
    assert small.attn.num_heads == 2


def test_head_dimension_of_a_fused_projection_stays_whole() -> None:
    model, x = _Net(unbind=True).eval(), torch.randn(2, 5, 6)
    plan = ns.plan_of(ns.prune(model, x, ratio=0.5))
    assert plan is not None
    kept = plan.tensors["attn.qkv.weight"][0]
    # whole heads: runs of 8 consecutive rows, the same heads in the q, k and v thirds
    starts = [i for i in kept if i % 8 == 0]
    assert all(list(range(s, s + 8)) == [i for i in kept if s <= i < s + 8] for s in starts)
    q_heads = [s // 8 for s in starts if s < 32]
    assert [s // 8 - 4 for s in starts if 32 <= s < 64] == q_heads
    assert [s // 8 - 8 for s in starts if s >= 64] == q_heads


def test_multihead_attention_heads_are_not_offered() -> None:
    # nn.MultiheadAttention checks its input width against embed_dim and reads its head
    # width off it: only the feed-forward neurons can go, and the analysis says why
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(6, 32)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.ff = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
            self.cls = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            h = h + self.attn(h, h, h, need_weights=False)[0]
            return self.cls((h + self.ff(h)).mean(1))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 6)
    graph = ns.analyze(model, x)
    assert [(g.name, g.kind) for g in graph.groups if g.prunable] == [("ff.0", "neurons")]
    assert "nn.MultiheadAttention" in graph.group("inp").reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing offered that fails verification
        report = check_model(model, x, ratio=0.5)
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0


def test_fused_qkv_heads_are_elastic_and_slices_match_extraction() -> None:
    torch.manual_seed(0)
    model, x = _Net(unbind=True).eval(), torch.randn(2, 5, 6)
    supernet = ns.elastic(model, x).eval()
    (choice,) = supernet.space.choices
    assert (choice.name, choice.options, choice.unit_width) == ("attn", (1, 2, 3, 4), 8)
    for arch in ({"attn": 1}, {"attn": 3}):
        small = supernet.extract(arch)
        with torch.no_grad(), supernet.use(arch):
            sliced = supernet(x)
        torch.testing.assert_close(sliced, small(x))
        assert small.attn.num_heads == arch["attn"]
        assert small.attn.qkv.out_features == 3 * 8 * arch["attn"]
