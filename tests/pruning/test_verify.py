"""Plans are verified against the original model with the removed units zeroed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import PlanError


class HeadCountAttention(nn.Module):
    """Reshapes with its own head count, the way many hand-written attentions do."""

    def __init__(self, dim: int = 32, n_head: int = 4) -> None:
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            m(x).view(b, t, self.n_head, -1).transpose(1, 2) for m in (self.q, self.k, self.v)
        )
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class HardCodedSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 12)
        self.b = nn.Linear(3, 4)
        self.c = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(self.a(x), [3, 9], dim=-1)
        return self.b(torch.relu(left)) + self.c(torch.relu(right))


def test_head_count_attribute_follows_the_pruned_heads() -> None:
    torch.manual_seed(0)
    model = HeadCountAttention().eval()
    x = torch.randn(2, 5, 32)
    plan = ns.plan(model, x, ratio=0.25)
    assert plan.widths["q"] == (4, 3)
    assert ("", "n_head", 3) in plan.attrs
    small = ns.apply(model, plan)
    assert small.n_head == 3 and model.n_head == 4
    # all-zero heads removed: identical outputs
    with torch.no_grad():
        for m in (model.q, model.k, model.v):
            m.weight[:8].zero_()
            m.bias[:8].zero_()
        model.proj.weight[:, :8].zero_()
    small = ns.prune(model, x, ratio=0.25)
    torch.testing.assert_close(call_model(small, x), call_model(model, x))


def test_sizes_hard_coded_in_a_split_keep_their_group_whole() -> None:
    torch.manual_seed(0)
    model = HardCodedSplit().eval()
    x = torch.randn(4, 8)
    plan = ns.plan(model, x, ratio=0.5)
    # the split's pieces are two groups; their sizes are literals in the code: kept whole
    assert plan.widths == {"a": (3, 3), "a#2": (9, 9)}
    assert plan.meta["kept_whole"] == ["a", "a#2"]


def test_output_widths_may_change_when_asked() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6)).eval()
    x = torch.randn(2, 4)
    small = ns.prune(model, x, ns.PruneConfig(ratio=0.5, protect_outputs=False))
    assert call_model(small, x).shape == (2, 3)


def test_prune_in_place_matches_the_copy() -> None:
    from netsculpt.testing.zoo import ZOO

    model, inputs = ZOO["hf_llama_gqa"]()
    copy_pruned = ns.prune(model, inputs, ratio=0.3)
    other, _ = ZOO["hf_llama_gqa"]()
    in_place = ns.prune(other, inputs, ratio=0.3, inplace=True)
    assert in_place is other
    torch.testing.assert_close(
        call_model(in_place, inputs).logits, call_model(copy_pruned, inputs).logits
    )


def test_in_place_output_widths_may_change_when_asked() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6)).eval()
    x = torch.randn(2, 4)
    config = ns.PruneConfig(ratio=0.5, protect_outputs=False)
    copy_pruned = ns.prune(model, x, config)
    in_place = ns.prune(model, x, config, inplace=True)
    assert in_place is model and call_model(in_place, x).shape == (2, 3)
    torch.testing.assert_close(call_model(in_place, x), call_model(copy_pruned, x))


def test_a_failed_in_place_prune_says_the_model_was_modified() -> None:
    torch.manual_seed(0)
    model = HardCodedSplit().eval()
    x = torch.randn(4, 8)
    # a copy keeps the hard-coded split's groups whole; in place there is no second try
    with pytest.raises(PlanError, match="pruned in place.*it has been modified"):
        ns.prune(model, x, ratio=0.5, inplace=True)
    assert model.a.out_features < 12


def test_copies_and_in_place_pruning_share_one_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from netsculpt.pruning import _verify, planner

    calls: list[bool] = []

    def counting(*args: Any, **kwargs: Any) -> _verify.Verified:
        calls.append(bool(kwargs.get("inplace", False)))
        return _verify.verify(*args, **kwargs)

    monkeypatch.setattr(planner, "verify", counting)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6)).eval()
    x = torch.randn(2, 4)
    ns.prune(model, x, ratio=0.5)
    ns.prune(model, x, ratio=0.5, inplace=True)
    assert calls == [False, True]
    # verify=False skips the check on both paths
    calls.clear()
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6)).eval()
    ns.prune(other, x, ns.PruneConfig(ratio=0.5, verify=False))
    ns.prune(other, x, ns.PruneConfig(ratio=0.5, verify=False), inplace=True)
    assert calls == []
