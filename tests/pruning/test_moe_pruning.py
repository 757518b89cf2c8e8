"""Mixture-of-experts models (tiny Mixtral and Qwen2-MoE from configs): expert neurons
pruned exactly, whole experts removed by router usage, reload, ONNX export."""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import ExportError, InputError, PlanError, UnsupportedOperationError
from netsculpt.pruning._experts import find_moe_blocks
from netsculpt.testing.experts import removed_experts_masked
from netsculpt.testing.zoo import MOE, ZOO, token_batches

pytest.importorskip("transformers")

# a module-level cache: each tiny model is built, analysed and pruned once per session
_CACHE: dict[str, Any] = {}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return call_model(model, inputs).logits


def _calib(inputs: dict[str, Any], n: int = 4) -> list[dict[str, Any]]:
    return token_batches(inputs, n)


def _pruned(name: str) -> tuple[nn.Module, Any, nn.Module]:
    """(original, inputs, neurons pruned at ratio 0.3), built once."""
    if name not in _CACHE:
        model, inputs = ZOO[name]()
        _CACHE[name] = (model, inputs, ns.prune(model, inputs, ratio=0.3))
    return _CACHE[name]


@pytest.mark.parametrize("name", MOE)
def test_expert_neurons_are_one_group_per_layer(name: str) -> None:
    model, inputs = ZOO[name]()
    graph = ns.analyze(model, inputs)
    assert not graph.skipped  # the grouped matmul is understood, not skipped
    experts = [g for g in graph.groups if g.module.endswith("mlp.experts")]
    neurons = [g for g in experts if g.prunable]
    assert len(neurons) == 2  # one per layer
    width = model.config.intermediate_size if name == "hf_mixtral" else 64
    for g in neurons:
        assert (g.kind, g.size, g.multiple) == ("neurons", width, 4)  # fp32: 16-byte strides
        assert {(s.tensor.rsplit(".", 1)[1], s.dim) for s in g.slots} == {
            ("gate_up_proj", 1),
            ("down_proj", 2),
        }
    # the expert dimension is protected, and says how to remove experts instead
    whole = [g for g in experts if not g.prunable]
    assert len(whole) == 2 and all(g.size == 4 for g in whole)
    assert all("prune_experts" in g.reason for g in whole)


@pytest.mark.parametrize("name", MOE)
def test_neuron_pruning_equals_zeroed_original(name: str) -> None:
    model, inputs, small = _pruned(name)
    plan = ns.plan_of(small)
    assert plan is not None and "kept_whole" not in plan.meta
    layer = "model.layers.0.mlp.experts"
    # each expert keeps its own neurons, as many in every expert
    gathers = {(t, d): (by, rows) for t, d, by, rows in plan.gathers}
    by, rows = gathers[(f"{layer}.down_proj", 2)]
    width = model.get_submodule(layer).down_proj.shape[2]
    assert by == 0 and len(rows) == 4 and len({len(r) for r in rows}) == 1
    assert len(rows[0]) % 4 == 0 and len(rows[0]) < width
    assert len(set(rows)) > 1  # not the same positions everywhere
    assert f"{layer}.down_proj" not in plan.tensors  # sliced there by the gather alone
    # those neurons set to zero in the original, expert by expert
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name_, dims in plan.tensors.items():
            t = zeroed.get_parameter(name_)
            for dim, idx in dims.items():
                gone = sorted(set(range(t.shape[dim])) - set(idx))
                t.index_fill_(dim, torch.tensor(gone, dtype=torch.long), 0.0)
        for name_, dim, _by, kept in plan.gathers:
            t = zeroed.get_parameter(name_)
            for e, idx in enumerate(kept):
                gone = sorted(set(range(t.shape[dim])) - set(idx))
                t[e].index_fill_(dim - 1, torch.tensor(gone, dtype=torch.long), 0.0)
    torch.testing.assert_close(_logits(small, inputs), _logits(zeroed, inputs))
    assert small.get_submodule(layer).gate_up_proj.shape[1] == 2 * len(rows[0])


def test_each_stacked_expert_keeps_its_own_best_neurons() -> None:
    torch.manual_seed(0)
    model, inputs = ZOO["hf_qwen2_moe"]()
    experts = model.get_submodule("model.layers.0.mlp.experts")
    with torch.no_grad():  # expert 0's strong neurons are the ones expert 1 finds weakest
        for e, weak in ((0, slice(0, 32)), (1, slice(32, 64))):
            experts.down_proj[e][:, weak] *= 0.01
            experts.gate_up_proj[e][weak] *= 0.01
            experts.gate_up_proj[e][64:][weak] *= 0.01
    small = ns.prune(model, inputs, ratio=0.5)
    plan = ns.plan_of(small)
    assert plan is not None
    rows = {(t, d): r for t, d, _by, r in plan.gathers}
    down = rows[("model.layers.0.mlp.experts.down_proj", 2)]
    assert len(down[0]) == len(down[1]) == 32
    assert min(down[0]) >= 32 and max(down[1]) < 32
    # gate and up halves of the fused projection follow the same neurons
    gate_up = rows[("model.layers.0.mlp.experts.gate_up_proj", 1)]
    assert gate_up[1] == (*down[1], *(64 + i for i in down[1]))
    kept = torch.tensor(down[1])
    torch.testing.assert_close(
        small.get_submodule("model.layers.0.mlp.experts").down_proj[1],
        experts.down_proj[1][:, kept],
    )


@pytest.mark.parametrize("name", MOE)
def test_per_expert_plans_compose_replay_and_reload(name: str, tmp_path: Path) -> None:
    model, inputs, small = _pruned(name)
    # neurons per expert, then whole experts, then neurons per expert again: one plan
    smaller = ns.prune(ns.prune_experts(small, _calib(inputs), ratio=0.25), inputs, ratio=0.3)
    plan = ns.plan_of(smaller)
    assert plan is not None and plan.gathers
    replayed = ns.apply(model, ns.Plan.from_json(plan.to_json()))
    torch.testing.assert_close(_logits(replayed, inputs), _logits(smaller, inputs), rtol=0, atol=0)
    ns.save(smaller, tmp_path)
    again = ns.load(tmp_path)
    torch.testing.assert_close(_logits(again, inputs), _logits(smaller, inputs), rtol=0, atol=0)


def test_gather_entries_are_checked_as_data() -> None:
    model, inputs, small = _pruned("hf_mixtral")
    plan = ns.plan_of(small)
    assert plan is not None
    data = json.loads(plan.to_json())
    name, dim, by, rows = data["gathers"][0]
    bad = [
        ([name, dim, by, rows[:3]], r"gathers\[0\]\[3\]: 3 lists of kept indices for the 4"),
        ([name, dim, dim, rows], r"gathers\[0\].*by itself"),
        ([name, dim, by, [rows[0], rows[1], rows[2], [[0, 1]]]], r"the same number"),
        (["model.nothing", dim, by, rows], r"gathers\[0\]\[0\].*original shape"),
        ([name, 9, by, rows], r"gathers\[0\]\[1\]"),
    ]
    for entry, message in bad:
        with pytest.raises(PlanError, match=message):
            ns.Plan.from_dict({**data, "gathers": [entry, *data["gathers"][1:]]})
    sliced = copy.deepcopy(data)
    sliced["tensors"].setdefault(name, {})[str(dim)] = [[0, 4]]
    with pytest.raises(PlanError, match=r"sliced along dimension .* in 'tensors' too"):
        ns.Plan.from_dict(sliced)


class _GroupedMatmulMoe(nn.Module):
    """Top-1 experts through torch.nn.functional.grouped_mm (aten::_grouped_mm), bfloat16."""

    def __init__(self, e: int = 4, d: int = 16, h: int = 32) -> None:
        super().__init__()
        self.num_experts = e
        self.inp = nn.Linear(8, d)
        self.router = nn.Linear(d, e, bias=False)
        self.up = nn.Parameter(torch.randn(e, h, d) / 4)
        self.down = nn.Parameter(torch.randn(e, d, h) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        ids, perm = torch.sort(self.router(x).argmax(-1))
        counts = torch.histc(ids.float(), bins=self.num_experts, min=0, max=self.num_experts - 1)
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        grouped_mm: Any = getattr(torch.nn.functional, "grouped_mm")  # noqa: B009 - torch >= 2.10
        hidden = torch.relu(grouped_mm(x[perm], self.up.transpose(-2, -1), offs=offs))
        y = grouped_mm(hidden, self.down.transpose(-2, -1), offs=offs)
        return y[torch.argsort(perm)] + x


def test_aten_grouped_mm_experts_prune_exactly() -> None:
    if not hasattr(torch.nn.functional, "grouped_mm"):
        pytest.skip("torch.nn.functional.grouped_mm needs torch >= 2.10")
    from netsculpt.testing.conformance import check_model

    torch.manual_seed(0)
    model = _GroupedMatmulMoe().eval().to(torch.bfloat16)
    x = torch.randn(12, 8, dtype=torch.bfloat16)
    group = ns.analyze(model, x).group("<top>#2")
    assert (group.kind, group.size, group.prunable, group.multiple) == ("neurons", 32, True, 8)
    report = check_model(model, x, ratio=0.5)
    assert report.params_after < report.params_before
    assert report.zero_units_max_diff == 0.0 and report.reload_max_diff == 0.0


@pytest.mark.parametrize("name", MOE)
def test_ratio_03_with_experts_removes_a_quarter_of_the_parameters(name: str) -> None:
    model, inputs, small = _pruned(name)
    smaller = ns.prune_experts(small, _calib(inputs), ratio=0.25)
    assert 1 - _params(smaller) / _params(model) >= 0.25
    if name == "hf_mixtral":  # the experts are most of the model: neurons alone suffice
        assert 1 - _params(small) / _params(model) >= 0.25
    plan = ns.plan_of(smaller)
    steps = plan.meta["steps"]
    assert steps[1]["step"] == "prune_experts" and steps[1]["exact"] is False
    assert "-inf" in steps[1]["approximate"]
    assert "experts       4 -> 3" in plan.describe()
    assert "prune_experts: approximate, not verified" in plan.describe()


@pytest.mark.parametrize(("name", "norm_topk"), [("hf_mixtral", None), ("hf_qwen2_moe", False)])
def test_expert_removal_equals_masked_router_logits(name: str, norm_topk: Any) -> None:
    # Mixtral: softmax over all experts, top-2, renormalised over the two. Qwen2-MoE with
    # norm_topk_prob=False: top-2 softmax probabilities used as they are, so the softmax
    # denominator (over the experts that remain) matters. Masking a logit with -inf removes
    # the expert from the softmax and from the top-k alike: both must match exactly.
    model, inputs = ZOO[name]()
    if norm_topk is not None:
        assert model.config.norm_topk_prob is norm_topk
    small = ns.prune_experts(model, _calib(inputs), ratio=0.5)
    meta = ns.plan_of(small).meta
    removed = meta["removed_experts"]
    assert all(len(v) == 2 for v in removed.values())
    for block, ids in removed.items():
        usage = meta["expert_usage"][block]
        assert sum(usage) == 4 * 14 * 2  # 4 batches of 14 real tokens (2 padded), top-2
        assert max(usage[i] for i in ids) <= min(u for i, u in enumerate(usage) if i not in ids)
        assert small.get_submodule(block).experts.num_experts == 2
        assert small.get_submodule(block).gate.weight.shape[0] == 2
    with removed_experts_masked(model, removed):
        reference = _logits(model, inputs)
    torch.testing.assert_close(_logits(small, inputs), reference)
    assert not torch.allclose(_logits(model, inputs), reference)  # approximate: it changed
    count = "num_local_experts" if name == "hf_mixtral" else "num_experts"
    assert getattr(small.config, count) == 2 and getattr(model.config, count) == 4


@pytest.mark.parametrize("name", MOE)
def test_pruned_moe_reloads_exactly(name: str, tmp_path: Path) -> None:
    model, inputs, small = _pruned(name)
    smaller = ns.prune_experts(small, _calib(inputs), ratio=0.25)
    ns.save(smaller, tmp_path)
    # the folder holds the unpruned config (the plan is replayed on it) ...
    base = json.loads((tmp_path / "netsculpt.json").read_text())["base"]["config"]
    count = "num_local_experts" if name == "hf_mixtral" else "num_experts"
    assert base[count] == 4
    again = ns.load(tmp_path)  # rebuilt from the config alone
    torch.testing.assert_close(_logits(again, inputs), _logits(smaller, inputs), rtol=0, atol=0)
    # ... and the reloaded model's config says what it is
    assert getattr(again.config, count) == 3
    width = "intermediate_size" if name == "hf_mixtral" else "moe_intermediate_size"
    kept = again.get_submodule("model.layers.0.mlp.experts").down_proj.shape[2]
    assert getattr(again.config, width) == kept < getattr(model.config, width)


def test_residual_width_and_experts_together(tmp_path: Path) -> None:
    # the hidden width runs through every expert's stacked weights and the router: it is cut
    # there too, in multiples of the grouped matmul's alignment, and verified like the rest
    model, inputs = ZOO["hf_mixtral"]()
    small = ns.prune(model, inputs, ns.PruneConfig(ratio=0.3, residual=True))
    plan = ns.plan_of(small)
    assert "kept_whole" not in plan.meta
    hidden = small.get_submodule("model.layers.0.mlp.experts").down_proj.shape[1]
    assert hidden < 64 and hidden % 4 == 0
    assert small.get_submodule("model.layers.0.mlp.gate").weight.shape == (4, hidden)
    smaller = ns.prune_experts(small, _calib(inputs), ratio=0.25)
    assert 1 - _params(smaller) / _params(model) >= 0.5
    ns.save(smaller, tmp_path)
    again = ns.load(tmp_path)
    torch.testing.assert_close(_logits(again, inputs), _logits(smaller, inputs), rtol=0, atol=0)


def test_excluded_expert_layers_stay_whole() -> None:
    model, inputs = ZOO["hf_qwen2_moe"]()
    small = ns.prune_experts(model, _calib(inputs), ratio=0.5, exclude=["model.layers.1.mlp"])
    assert small.get_submodule("model.layers.0.mlp.experts").gate_up_proj.shape[0] == 2
    assert small.get_submodule("model.layers.1.mlp.experts").gate_up_proj.shape[0] == 4
    assert small.config.num_experts == 4  # the layers disagree: the config keeps its value
    assert list(ns.plan_of(small).meta["removed_experts"]) == ["model.layers.0.mlp"]


def test_prune_experts_refuses_bad_input_and_changes_nothing() -> None:
    model, inputs = ZOO["hf_mixtral"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=r"fewer than the 2 its router picks.*ratio<=0\.5"):
        ns.prune_experts(model, _calib(inputs), ratio=0.75)
    with pytest.raises(InputError, match="calib"):
        ns.prune_experts(model, None, ratio=0.25)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no expert layer"):
        ns.prune_experts(nn.Linear(4, 4), [torch.randn(1, 4)], ratio=0.25)
    assert model.config.num_local_experts == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


class _Experts(nn.Module):
    def __init__(self, n: int = 4, d: int = 8, h: int = 16) -> None:
        super().__init__()
        self.num_experts = n
        self.up = nn.Parameter(torch.randn(n, h, d))
        self.down = nn.Parameter(torch.randn(n, d, h))

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        up = torch.einsum("td,thd->th", x, self.up[idx])
        return torch.einsum("th,tdh->td", torch.relu(up), self.down[idx])


class _OpaqueRouterMoe(nn.Module):
    """Routes with a hash of the input: no router module netsculpt can observe."""

    def __init__(self, with_gate: bool) -> None:
        super().__init__()
        self.experts = _Experts()
        self.top_k = 2
        if with_gate:
            self.gate = nn.Linear(8, 4, bias=False)  # present, but never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x.sum(-1) * 1000).long().remainder(4)
        return self.experts(x, idx)


def test_untraceable_router_names_the_module() -> None:
    x = torch.randn(5, 8)
    with pytest.raises(UnsupportedOperationError, match=r"router of the expert layer '<top>'"):
        ns.prune_experts(_OpaqueRouterMoe(with_gate=False), [x], ratio=0.25)
    net = nn.Sequential(_OpaqueRouterMoe(with_gate=True))
    with pytest.raises(
        UnsupportedOperationError, match=r"router '0\.gate' of the expert layer '0'"
    ):
        ns.prune_experts(net, [x], ratio=0.25)
    assert [b.path for b in find_moe_blocks(net)] == ["0"]


class _HardCoded(nn.Module):
    """A reshape to a literal width no attribute explains: its channels cannot be cut."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)).reshape(-1, 16))


def test_a_plan_that_removes_nothing_says_why() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = ns.plan(_HardCoded().eval(), torch.randn(2, 8), ratio=0.5)
    assert plan.is_identity and plan.meta["kept_whole"] == ["fc1"]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any(m.startswith("the plan removes nothing") and "'fc1'" in m for m in messages)


@contextlib.contextmanager
def _grouped_experts_kept(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Export with the grouped-matmul experts as they are (what netsculpt used to do)."""
    import netsculpt.export.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "_exportable_experts", lambda model: contextlib.nullcontext())
    yield


def test_onnx_export_of_pruned_moe_matches_onnxruntime(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    model, inputs, small = _pruned("hf_mixtral")
    smaller = ns.prune_experts(small, _calib(inputs), ratio=0.25)
    path = ns.export_onnx(smaller, inputs, tmp_path / "moe.onnx", exporter="torchscript")
    assert ns.check_onnx(smaller, inputs, path) < 1e-4  # export_onnx checked both batch sizes
    assert smaller.config._experts_implementation == "grouped_mm"  # restored
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 2000


def test_onnx_export_failure_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    model, inputs = ZOO["hf_mixtral"]()
    with _grouped_experts_kept(monkeypatch), pytest.raises(ExportError) as info:
        ns.export_onnx(model, inputs, tmp_path / "moe.onnx", exporter="torchscript")
    message = str(info.value)
    assert "\n" not in message and len(message) < 800
    assert "histc" in message  # the operator the exporter could not write
    out, err = capfd.readouterr()
    assert len(out) + len(err) < 2000  # the exporter's graph dump (~190 KB) is not printed


@pytest.mark.slow
@pytest.mark.parametrize("name", MOE)
def test_onnx_export_default_exporter(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model, inputs, small = _pruned(name)
    path = ns.export_onnx(small, inputs, tmp_path / "moe.onnx")
    assert ns.check_onnx(small, inputs, path) < 1e-4
