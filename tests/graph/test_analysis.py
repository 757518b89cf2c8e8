"""Dependency groups found by ns.analyze on hand-written and transformers models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import CaptureError, ExampleInputsError, UnsupportedOperationError
from netsculpt.graph.spaces import SpaceTable
from netsculpt.testing.zoo import ZOO


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = y + self.conv3(torch.relu(self.conv2(y)))
        return self.head(y.mean((2, 3)))


def test_residual_add_couples_producers_and_consumers() -> None:
    graph = ns.analyze(Residual(), torch.randn(2, 3, 8, 8))
    coupled = graph.group("conv1")
    assert coupled.prunable and coupled.kind == "channels" and coupled.size == 8
    # conv1 out, bn1, conv2 in, conv3 out (residual) and the head's input all move together
    assert set(coupled.params) >= {
        "conv1.weight",
        "bn1.weight",
        "conv2.weight",
        "conv3.weight",
        "head.weight",
    }
    inner = graph.group("conv2")
    assert inner.prunable and set(inner.params) == {"conv2.weight", "conv2.bias", "conv3.weight"}
    assert not graph.group("head").prunable
    assert "output" in graph.group("head").reason


def test_llama_gqa_heads_are_pruned_in_whole_key_value_groups() -> None:
    model, inputs = ZOO["hf_llama_gqa"]()
    cfg = model.config
    graph = ns.analyze(model, inputs)
    heads = [g for g in graph.prunable_groups if g.kind == "heads"]
    assert len(heads) == cfg.num_hidden_layers
    g = heads[0]
    assert g.size == cfg.num_key_value_heads
    assert "grouped-query" in g.note
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    # unit j of q_proj owns rows of query heads j*rep .. j*rep+rep-1
    q = next(s for s in g.slots if s.tensor.endswith("q_proj.weight"))
    _leaf, arr = graph.index_map(q.tensor, q.dim)[g.uid]
    np.testing.assert_array_equal(
        arr, np.arange(cfg.num_attention_heads * head_dim) // (rep * head_dim)
    )
    k = next(s for s in g.slots if s.tensor.endswith("k_proj.weight"))
    _leaf, arr = graph.index_map(k.tensor, k.dim)[g.uid]
    np.testing.assert_array_equal(arr, np.arange(cfg.num_key_value_heads * head_dim) // head_dim)


def test_bert_heads_and_ffn_neurons() -> None:
    model, inputs = ZOO["hf_bert"]()
    graph = ns.analyze(model, inputs)
    kinds = {g.kind for g in graph.prunable_groups}
    assert kinds == {"heads", "neurons"}
    heads = [g for g in graph.prunable_groups if g.kind == "heads"]
    assert all(g.size == model.config.num_attention_heads for g in heads)
    hidden = [g for g in graph.groups if g.size == model.config.hidden_size and not g.prunable]
    assert hidden, "the residual stream must be protected"


def test_grouped_conv_splits_channels_into_groups_and_members() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.Conv2d(16, 32, 3, groups=4), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.randn(1, 3, 5, 5)
    model(x)
    graph = ns.analyze(model, x)
    sizes = sorted(g.size for g in graph.prunable_groups)
    assert sizes == [4, 4, 8]  # 4 groups, 4 inputs per group, 8 outputs per group


def test_unknown_op_is_listed_or_raised() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.fft.fft(self.a(x)).real)

    x = torch.randn(2, 4)
    graph = ns.analyze(Odd(), x)
    assert not graph.prunable_groups
    assert graph.skipped and "fft" in graph.skipped[0].op
    with pytest.raises(UnsupportedOperationError, match="exclude it with exclude="):
        ns.analyze(Odd(), x, on_unsupported="error")


def test_bad_inputs_and_untraceable_models() -> None:
    with pytest.raises(ExampleInputsError, match="could not be called"):
        ns.analyze(nn.Linear(4, 2), torch.randn(2, 5))

    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(CaptureError, match="torch.export could not capture"):
        ns.analyze(DataDependent(), torch.randn(3))


def test_analysis_leaves_the_model_untouched() -> None:
    model = Residual().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ns.analyze(model, torch.randn(2, 3, 8, 8))
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_space_refinement_and_index_maps() -> None:
    table = SpaceTable()
    hd = table.new(12)
    heads = table.make_prod([table.new(3), table.new(4)])
    table.unify(hd, heads)
    leaves = table.leaves(hd)
    assert [leaf.size for leaf in leaves] == [3, 4]
    imap = table.index_map(hd)
    outer = table.find(leaves[0]).uid
    np.testing.assert_array_equal(imap[outer][1], np.repeat(np.arange(3), 4))
    cat = table.new(10)
    pieces = table.split_cat(cat, [4, 6])
    assert [p.size for p in pieces] == [4, 6]
    mismatch = table.unify(table.new(5), table.new(6))
    assert mismatch.taint
