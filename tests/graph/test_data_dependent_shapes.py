"""Sizes that depend on tensor values (tokens routed to an expert): captured, analysed,
pruned exactly per expert, and never mistaken for channels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import netsculpt as ns
from netsculpt.errors import PlanError
from netsculpt.graph.spaces import SpaceTable, static_size
from netsculpt.testing._blocks import ExpertMLP, SparseMoE
from netsculpt.testing.conformance import check_model
from netsculpt.testing.experts import removed_experts_masked
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


def _calib(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 100, (2, 16), generator=g) for _ in range(n)]


def test_experts_of_a_module_list_are_removed_by_router_usage() -> None:
    torch.manual_seed(0)
    model, inputs = ZOO["moe_transformer"]()
    small = ns.prune_experts(model, _calib(), ratio=0.5)
    plan = ns.plan_of(small)
    assert plan is not None
    removed = plan.meta["removed_experts"]
    for layer in range(2):
        block, moe = f"moes.{layer}", small.moes[layer]
        ids = removed[block]
        usage = plan.meta["expert_usage"][block]
        assert len(ids) == 2 and sum(usage) == 3 * 2 * 16 * 2  # 3 batches, 32 tokens, top-2
        assert max(usage[i] for i in ids) <= min(u for i, u in enumerate(usage) if i not in ids)
        assert len(moe.experts) == 2 and moe.gate.weight.shape == (2, 32)
        kept = [i for i in range(4) if i not in ids]
        assert (f"moes.{layer}.experts", 4, tuple(kept)) in plan.lists
        # the kept experts moved up with their own weights
        for new, old in enumerate(kept):
            torch.testing.assert_close(
                moe.experts[new].up.weight, model.moes[layer].experts[old].up.weight
            )
    assert len(model.moes[0].experts) == 4  # the original is left whole
    # approximate: it computes what the original does with those experts never routed to
    with torch.no_grad(), removed_experts_masked(model, removed):
        reference = model(inputs)
    with torch.no_grad():
        torch.testing.assert_close(small(inputs), reference)
        assert not torch.allclose(model(inputs), reference)


@pytest.mark.parametrize(
    "experts_first", [True, False], ids=["experts-then-neurons", "neurons-then-experts"]
)
def test_expert_removal_composes_with_neuron_pruning(experts_first: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, inputs = ZOO["moe_transformer"]()
    if experts_first:
        smaller = ns.prune(ns.prune_experts(model, _calib(), ratio=0.5), inputs, ratio=0.5)
    else:
        smaller = ns.prune_experts(ns.prune(model, inputs, ratio=0.5), _calib(), ratio=0.5)
    assert len(smaller.moes[1].experts) == 2
    assert smaller.moes[1].experts[1].up.out_features == 32
    plan = ns.plan_of(smaller)
    assert plan is not None
    kept = dict((m, k) for m, _n, k in plan.lists)["moes.1.experts"]
    # the composed plan names the original's experts: replayed from JSON on the original
    # model, it rebuilds the same network (the second expert kept is original expert kept[1])
    assert f"moes.1.experts.{kept[1]}.up.weight" in plan.tensors
    replayed = ns.apply(model, ns.Plan.from_json(plan.to_json()))
    with torch.no_grad():
        torch.testing.assert_close(replayed(inputs), smaller(inputs), rtol=0, atol=0)
    ns.save(smaller, tmp_path)
    again = ns.load(tmp_path, base=ZOO["moe_transformer"]()[0])
    with torch.no_grad():
        torch.testing.assert_close(again(inputs), smaller(inputs), rtol=0, atol=0)
    path = ns.export_onnx(smaller, inputs, tmp_path / "moe.onnx")
    assert path.stat().st_size > 0


def test_a_plan_for_module_list_entries_is_checked_before_anything_changes() -> None:
    model, inputs = ZOO["moe_transformer"]()
    plan = ns.plan_of(ns.prune_experts(model, _calib(), ratio=0.5))
    assert plan is not None
    data = json.loads(plan.to_json())
    bad = {
        "not a list of the model": (
            ["moes.0.gate", 4, [[0, 2]]],
            r"'moes\.0\.gate'.*not a ModuleList",
        ),
        "wrong length": (["moes.0.experts", 5, [[0, 2]]], r"'moes\.0\.experts' to hold 5 entries"),
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for entry, message in bad.values():
        wrong = ns.Plan.from_dict({**data, "lists": [entry]})
        with pytest.raises(PlanError, match=message):
            ns.apply(model, wrong)
    for entry, message in [
        (["moes.0.experts", 4, []], r"lists\[0\]\[2\].*keep at least one"),
        (["moes.0.experts", 4, [[2, 5]]], r"lists\[0\]\[2\]"),
        (["moes.0.experts", 4], r"lists\[0\].*expected \[module list, entries, kept\]"),
    ]:
        with pytest.raises(PlanError, match=message):
            ns.Plan.from_dict({**data, "lists": [entry]})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len(model.moes[0].experts) == 4
