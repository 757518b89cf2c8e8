"""ns.plan / ns.apply / ns.prune: ratios, importance criteria, rounding, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import (
    InputError,
    InvalidRatioError,
    NothingToPruneError,
    PlanError,
    UnknownNameError,
)
from netsculpt.testing.zoo import ZOO


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    return model.eval(), torch.randn(8, 16)


def test_ratio_removes_that_fraction_of_every_group() -> None:
    model, x = mlp()
    plan = ns.plan(model, x, ratio=0.25)
    assert plan.widths == {"0": (64, 48), "2": (32, 24)}
    small = ns.apply(model, plan)
    assert small[0].out_features == 48 and small[2].in_features == 48
    assert small[2].out_features == 24 and small[4].in_features == 24
    assert call_model(small, x).shape == (8, 4)


def test_model_is_never_modified() -> None:
    model, x = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ns.prune(model, x, ratio=0.5)
    assert model[0].out_features == 64
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_magnitude_keeps_the_largest_units() -> None:
    model, x = mlp()
    with torch.no_grad():
        model[0].weight[:10] *= 100  # make units 0..9 of the first group dominant
    plan = ns.plan(model, x, ratio={"0": 0.8})
    kept = dict((g.name, g.kept) for g in plan.groups)["0"]
    assert set(range(10)) <= set(kept) and len(kept) == 13
    assert plan.widths["2"] == (32, 32)  # groups not named keep their width


def test_per_group_ratios_by_pattern_and_default() -> None:
    model, x = mlp()
    plan = ns.plan(model, x, ratio={"re:^2$": 0.5, "*": 0.25})
    assert plan.widths == {"0": (64, 48), "2": (32, 16)}
    with pytest.raises(InputError, match="matches no prunable group"):
        ns.plan(model, x, ratio={"layer9": 0.5})


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half", True])
def test_ratio_outside_range_is_refused(ratio: object) -> None:
    model, x = mlp()
    with pytest.raises(InvalidRatioError, match=r"\[0, 1\)"):
        ns.plan(model, x, ratio=ratio)  # type: ignore[arg-type]


def test_unknown_importance_lists_the_known_ones() -> None:
    model, x = mlp()
    with pytest.raises(UnknownNameError, match="magnitude"):
        ns.plan(model, x, importance="psychic")


def test_round_to_keeps_kernel_friendly_widths() -> None:
    model, x = mlp()
    plan = ns.plan(model, x, ns.PruneConfig(ratio=0.3, round_to=8))
    assert all(kept % 8 == 0 for _size, kept in plan.widths.values())


@pytest.mark.parametrize(
    "importance", ["magnitude", "l1", "taylor", "activation", "random", "lamp"]
)
def test_every_importance_criterion_produces_a_runnable_model(importance: str) -> None:
    model, x = mlp()
    calib = [torch.randn(8, 16) for _ in range(2)]
    small = ns.prune(model, x, ratio=0.4, importance=importance, calib=calib)
    assert call_model(small, x).shape == (8, 4)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_calibration_criteria_need_batches() -> None:
    model, x = mlp()
    for importance in ("taylor", "activation"):
        with pytest.raises(InputError, match="calib"):
            ns.plan(model, x, importance=importance)


def test_taylor_follows_the_loss() -> None:
    model, x = mlp()
    # a loss that only looks at output 0 makes units feeding other outputs less important
    plan = ns.plan(
        model,
        x,
        ratio={"2": 0.5},
        importance="taylor",
        calib=[x],
        loss_fn=lambda out, batch: out[:, 0].pow(2).sum(),
    )
    grads_w = model[4].weight[0].detach().abs()
    kept = dict((g.name, g.kept) for g in plan.groups)["2"]
    assert grads_w[list(kept)].mean() > 0  # kept units connect to output 0
    assert len(kept) == 16


def test_lamp_global_ranking_gives_layer_adaptive_ratios() -> None:
    model, x = mlp()
    with torch.no_grad():
        model[2].weight.mul_(0.01)  # second layer much smaller: global ranking prunes it more
    plan = ns.plan(model, x, ratio=0.3, importance="lamp")
    assert plan.meta["global_ranking"] is True
    total_before = sum(s for s, _ in plan.widths.values())
    total_after = sum(k for _, k in plan.widths.values())
    assert total_before - total_after == int(0.3 * 64) + int(0.3 * 32)


def test_a_registered_criterion_is_used_by_name_and_a_callable_is_refused() -> None:
    from netsculpt.pruning.importance import IMPORTANCE

    model, x = mlp()

    @ns.register_importance("test_first_units_first")
    def first_units_first(g, ctx):  # type: ignore[no-untyped-def]
        return -torch.arange(g.size).numpy()

    try:
        plan = ns.plan(model, x, ratio={"0": 0.5}, importance="test_first_units_first")
        assert dict((g.name, g.kept) for g in plan.groups)["0"] == tuple(range(32))
        with pytest.raises(InputError, match=r"register it with ns\.register_importance"):
            ns.plan(model, x, importance=first_units_first)  # type: ignore[arg-type]
    finally:
        IMPORTANCE.pop("test_first_units_first", None)


def test_nothing_to_prune() -> None:
    with pytest.raises(NothingToPruneError, match="no prunable group"):
        ns.plan(nn.Linear(4, 2), torch.randn(3, 4))


def test_plan_json_round_trip_and_apply_checks_shapes() -> None:
    model, x = mlp()
    plan = ns.plan(model, x, ratio=0.5)
    again = ns.Plan.from_json(plan.to_json())
    assert again == plan
    torch.testing.assert_close(
        call_model(ns.apply(model, again), x), call_model(ns.apply(model, plan), x)
    )
    other = nn.Sequential(
        nn.Linear(16, 60), nn.ReLU(), nn.Linear(60, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    with pytest.raises(PlanError, match="expects"):
        ns.apply(other, plan)
    with pytest.raises(PlanError, match="not a netsculpt plan"):
        ns.Plan.from_json('{"format": "other"}')


def test_exclude_keeps_a_module_whole() -> None:
    model, x = mlp()
    # excluding the head keeps its input width: the group feeding it stays whole
    plan = ns.plan(model, x, ns.PruneConfig(ratio=0.5, exclude=("4",)))
    assert "2" not in plan.widths
    assert plan.widths["0"] == (64, 32)
    graph = ns.analyze(model, x, exclude=["4"])
    assert graph.group("2").reason == "excluded by the user"


def test_remove_blocks_of_a_llama() -> None:
    model, inputs = ZOO["hf_llama_gqa"]()
    graph = ns.analyze(model, inputs)
    mlp_block = next(b for b in graph.blocks if b.endswith("layers.1.mlp"))
    small = ns.apply(
        model,
        ns.plan(model, inputs, ns.PruneConfig(ratio=0.0, remove_blocks=(mlp_block,)), graph=graph),
    )
    from netsculpt.pruning.apply import Removed

    assert isinstance(small.get_submodule(mlp_block), Removed)
    out = call_model(small, inputs)
    assert out.logits.shape == call_model(model, inputs).logits.shape
    with pytest.raises(InputError, match="not removable blocks"):
        ns.plan(model, inputs, ns.PruneConfig(remove_blocks=("model.embed_tokens",)), graph=graph)


def test_removing_a_zero_branch_changes_nothing() -> None:
    model, inputs = ZOO["hf_llama_gqa"]()
    layer = model.model.layers[0].mlp
    with torch.no_grad():
        layer.down_proj.weight.zero_()
    small = ns.prune(
        model, inputs, ns.PruneConfig(ratio=0.0, remove_blocks=("model.layers.0.mlp",))
    )
    torch.testing.assert_close(call_model(small, inputs).logits, call_model(model, inputs).logits)


def test_plan_attribute_allow_list_is_the_planners() -> None:
    from netsculpt.pruning import _build
    from netsculpt.pruning import plan as plan_module
    from netsculpt.pruning.plan import is_size_attribute

    # the attributes a plan may set are the ones the planner writes: one pair of patterns
    assert _build.SIZE_ATTRIBUTE is plan_module.SIZE_ATTRIBUTE
    assert _build.NOT_SIZE_ATTRIBUTE is plan_module.NOT_SIZE_ATTRIBUTE
    for good in ("groups", "num_groups", "num_heads", "head_dim", "split_size", "all_head_size"):
        assert is_size_attribute(good), good
    for bad in ("__class__", "forward", "training", "_num", "class", "vocab_size", "layer_idx", 5):
        assert not is_size_attribute(bad), bad


def test_plan_json_is_checked_against_the_model_shapes() -> None:
    model, x = mlp()
    plan = ns.plan(model, x, ratio=0.5)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert ns.Plan.from_json(plan.to_json(), shapes=shapes) == plan
    with pytest.raises(PlanError, match="expects '0.weight' of shape"):
        ns.Plan.from_json(plan.to_json(), shapes={**shapes, "0.weight": (60, 16)})
    data = plan.to_dict()
    data["tensors"]["0.weight"]["0"] = [[0, 10**12]]
    with pytest.raises(PlanError, match="outside"):
        ns.Plan.from_dict(data)


def test_composed_plans_round_trip_through_json() -> None:
    model, x = mlp()
    small = model
    for _ in range(3):
        small = ns.prune(small, x, ratio=0.2)
    composed = ns.plan_of(small)
    assert composed is not None
    again = ns.Plan.from_json(composed.to_json())
    torch.testing.assert_close(call_model(ns.apply(model, again), x), call_model(small, x))
