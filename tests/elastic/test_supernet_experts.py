"""Elastic super-networks of stacked-weight expert layers: each expert orders its own
neurons, so every sub-network keeps each expert's best ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import SaveLoadError
from netsculpt.testing.zoo import ZOO

pytest.importorskip("transformers")


def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return call_model(model, inputs).logits


def _skewed_qwen2_moe() -> tuple[nn.Module, dict[str, Any]]:
    """Expert 0's strong neurons are the ones expert 1 finds weakest."""
    torch.manual_seed(0)
    model, inputs = ZOO["hf_qwen2_moe"]()
    experts = model.get_submodule("model.layers.0.mlp.experts")
    with torch.no_grad():
        for e, weak in ((0, slice(0, 32)), (1, slice(32, 64))):
            experts.down_proj[e][:, weak] *= 0.01
            experts.gate_up_proj[e][weak] *= 0.01
            experts.gate_up_proj[e][64:][weak] *= 0.01
    return model, inputs


def test_each_expert_orders_its_own_neurons() -> None:
    model, inputs = _skewed_qwen2_moe()
    supernet = ns.elastic(model, inputs, ns.ElasticConfig(keep=(0.5, 1.0)))
    group = "model.layers.0.mlp.experts#2"
    rows = supernet.expert_orders[group]
    assert len(rows) == 4 and all(sorted(r) == list(range(64)) for r in rows)
    assert supernet.orders[group] == list(range(64))  # no shared order on top
    assert min(rows[0][:32]) >= 32 and max(rows[1][:32]) < 32
    torch.testing.assert_close(_logits(supernet, inputs), _logits(model, inputs))
    small = supernet.extract(supernet.smallest())
    plan = ns.plan_of(small)
    assert plan is not None
    kept = {(t, d): r for t, d, _by, r in plan.gathers}
    down = kept[("model.layers.0.mlp.experts.down_proj", 2)]
    assert min(down[0]) >= 32 and max(down[1]) < 32
    # the plan against the original rebuilds the extracted sub-network
    replayed = ns.apply(model, ns.Plan.from_json(plan.to_json()))
    torch.testing.assert_close(_logits(replayed, inputs), _logits(small, inputs))


def test_expert_orders_save_load_and_are_checked(tmp_path: Path) -> None:
    model, inputs = _skewed_qwen2_moe()
    supernet = ns.elastic(model, inputs, ns.ElasticConfig(keep=(0.5, 1.0)))
    ns.save_supernet(supernet, tmp_path / "s")
    again = ns.load_supernet(tmp_path / "s", base=ZOO["hf_qwen2_moe"]()[0])
    assert again.expert_orders == supernet.expert_orders
    arch = supernet.smallest()
    with supernet.use(arch), again.use(arch):
        torch.testing.assert_close(_logits(again, inputs), _logits(supernet, inputs))
    description = tmp_path / "s" / "elastic.json"
    data = json.loads(description.read_text())
    group = "model.layers.0.mlp.experts#2"
    for rows, message in [
        (data["expert_orders"][group][:3], r"'expert_orders'\['model.layers.0.mlp.experts#2'\]"),
        ([[0, 0, *range(2, 64)]] * 4, r"not a permutation"),
    ]:
        bad = {**data, "expert_orders": {**data["expert_orders"], group: rows}}
        description.write_text(json.dumps(bad))
        with pytest.raises(SaveLoadError, match=message):
            ns.load_supernet(tmp_path / "s", base=ZOO["hf_qwen2_moe"]()[0])
