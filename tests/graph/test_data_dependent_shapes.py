"""Sizes that depend on tensor values (tokens routed to an expert): captured, analysed,
pruned exactly per expert, and never mistaken for channels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import netsculpt as ns
from netsculpt.errors import UnsupportedOperationError
from netsculpt.graph.spaces import SpaceTable, static_size
from netsculpt.testing._blocks import ExpertMLP, SparseMoE
from netsculpt.testing.conformance import check_model
from netsculpt.testing.zoo import ZOO


class _IndexPutMoE(SparseMoE):
    """The same routing, written back with ``out[rows] += ...`` (aten::index_put)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen = self.gate(flat).softmax(-1).topk(self.top_k, dim=-1)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(chosen == e)
            out[rows] += weights[rows, slot, None] * expert(flat[rows])
        return out.reshape(x.shape)


class _Net(nn.Module):
    def __init__(self, moe: nn.Module) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.moe = moe
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(h + self.moe(h))


def test_a_data_dependent_size_is_a_tainted_stand_in() -> None:
    shape_env = ShapeEnv()
    rows = shape_env.create_unbacked_symint()
    assert static_size(7) == 7
    assert static_size(rows) < 0
    assert static_size(rows) == static_size(rows)  # one symbol, one stand-in
    space = SpaceTable().new(rows)
    assert space.size < 0 and "data-dependent" in space.taint


def test_experts_in_a_module_list_are_one_group_each() -> None:
    model, inputs = ZOO["moe_transformer"]()
    graph = ns.analyze(model, inputs)
    assert not graph.skipped
    for layer in range(2):
        for e in range(4):
            group = graph.group(f"moes.{layer}.experts.{e}.up")
            assert (group.kind, group.size, group.prunable) == ("neurons", 64, True)
    # the token dimension an expert sees is never offered as channels
    assert all(g.size > 0 for g in graph.groups)


def test_each_expert_keeps_its_own_neurons() -> None:
    torch.manual_seed(0)
    model, inputs = ZOO["moe_transformer"]()
    with torch.no_grad():  # expert 1's important neurons are the ones expert 0 finds weakest
        up0 = model.moes[0].experts[0].up.weight
        up0[:32] *= 0.01
        model.moes[0].experts[1].up.weight[32:] *= 0.01
    small = ns.prune(model, inputs, ratio=0.5)
    plan = ns.plan_of(small)
    assert plan is not None
    kept0 = plan.tensors["moes.0.experts.0.up.weight"][0]
    kept1 = plan.tensors["moes.0.experts.1.up.weight"][0]
    assert len(kept0) == len(kept1) == 32
    assert min(kept0) >= 32 and max(kept1) < 32
    assert small.moes[0].experts[0].down.in_features == 32


@pytest.mark.parametrize("moe", [SparseMoE, _IndexPutMoE], ids=["index_add", "index_put"])
def test_routed_experts_prune_exactly_reload_and_export(
    moe: type[nn.Module], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = _Net(moe()).eval()
    x = torch.randn(3, 5, 8)
    report = check_model(model, x, ratio=0.5)
    assert report.params_after < report.params_before
    assert report.zero_units_max_diff < 1e-5 and report.reload_max_diff == 0.0
    small = ns.prune(model, x, ratio=0.5)
    assert isinstance(small.moe.experts[2], ExpertMLP)
    assert small.moe.experts[2].up.out_features == 32
    path = ns.export_onnx(small, x, tmp_path / "moe.onnx")
    assert path.stat().st_size > 0


def test_removing_experts_of_a_module_list_points_to_neuron_pruning() -> None:
    model, inputs = ZOO["moe_transformer"]()
    with pytest.raises(UnsupportedOperationError, match=r"'moes\.0\.experts'.*ModuleList.*prune"):
        ns.prune_experts(model, [inputs], ratio=0.25)
