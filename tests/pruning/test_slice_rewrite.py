"""Literal slices that take a whole piece of a concatenation are rewritten, not kept whole."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import PlanError


class HeadOfConcat(nn.Module):
    """``torch.cat([a, b], 1)[:, :64]``: the slice takes exactly ``a``'s channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.b = nn.Conv2d(3, 32, 3, padding=1)
        self.c = nn.Conv2d(64, 16, 1)
        self.d = nn.Conv2d(32, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        return self.c(y[:, :64]) + self.d(y[:, 64:])


class NarrowTail(nn.Module):
    """A piece in the middle of three, taken with ``narrow``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(8, 24)
        self.c = nn.Linear(8, 8)
        self.head = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x), self.c(x)], -1)
        return self.head(torch.relu(y.narrow(-1, 16, 24))) + y[..., :16].sum(-1, keepdim=True)


class Untraceable(HeadOfConcat):
    """The same slice behind a branch on a shape, which torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        z = self.c(y[:, :64]) + self.d(y[:, 64:])
        if x.shape[0] > 1:
            return z
        return -z


def _zeroed(model: nn.Module, plan: ns.Plan, layer: str) -> nn.Module:
    """``model`` with the output channels ``plan`` removes from ``layer`` zeroed."""
    ref = copy.deepcopy(model)
    module = ref.get_submodule(layer)
    kept = torch.as_tensor(plan.tensors[f"{layer}.weight"][0])
    mask = torch.ones(module.weight.shape[0], dtype=torch.bool)
    mask[kept] = False
    with torch.no_grad():
        module.weight[mask] = 0
        module.bias[mask] = 0
    return ref


@pytest.fixture
def pruned() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = HeadOfConcat().eval()
    x = torch.randn(2, 3, 8, 8)
    return model, ns.prune(model, x, ratio=0.5), x


def test_a_piece_taken_by_literal_bounds_is_pruned_and_its_bounds_rewritten(pruned) -> None:
    model, small, x = pruned
    plan = ns.plan_of(small)
    assert "kept_whole" not in plan.meta
    assert small.a.out_channels == 32 and small.c.in_channels == 32
    assert small.b.out_channels == 16 and small.d.in_channels == 16
    assert sorted(plan.slices) == [("", 1, 0, 64, 0, 32), ("", 1, 64, 96, 32, 48)]
    ref = _zeroed(_zeroed(model, plan, "a"), plan, "b")
    torch.testing.assert_close(small(x), ref(x), rtol=1e-5, atol=1e-5)
    # the original keeps its own code
    assert model(x).shape == small(x).shape and "forward" not in vars(model)


def test_rewritten_model_copies_saves_reloads_and_exports(pruned, tmp_path) -> None:
    model, small, x = pruned
    twin = copy.deepcopy(small)
    torch.testing.assert_close(twin(x), small(x))
    assert twin.forward.__self__ is twin
    ns.save(small, tmp_path / "folder")
    stored = json.loads((tmp_path / "folder" / "plan.json").read_text())
    assert sorted(r[2:4] for r in stored["slices"]) == [[0, 64], [64, 96]]
    torch.manual_seed(1)
    back = ns.load(tmp_path / "folder", base=HeadOfConcat())
    torch.testing.assert_close(back(x), small(x))
    ort = pytest.importorskip("onnxruntime")
    path = ns.export_onnx(small, x, tmp_path / "small.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), small(x), rtol=1e-4, atol=1e-4)


def test_pruning_a_rewritten_model_again_composes_to_the_code_bounds(pruned, tmp_path) -> None:
    model, small, x = pruned
    smaller = ns.prune(small, x, ratio=0.5)
    assert smaller.a.out_channels == 16 and smaller.c.in_channels == 16
    plan = ns.plan_of(smaller)
    # recorded against the code's 0:64 and 64:96, whatever the first plan made of them
    assert sorted(plan.slices) == [("", 1, 0, 64, 0, 16), ("", 1, 64, 96, 16, 24)]
    ns.save(smaller, tmp_path / "twice")
    back = ns.load(tmp_path / "twice", base=copy.deepcopy(model))
    torch.testing.assert_close(back(x), smaller(x))


def test_a_middle_piece_taken_with_narrow() -> None:
    torch.manual_seed(0)
    model = NarrowTail().eval()
    x = torch.randn(4, 8)
    plan = ns.plan(model, x, ns.PruneConfig(ratio={"b": 0.5}))
    assert "kept_whole" not in plan.meta
    small = ns.apply(model, plan)
    assert small.b.out_features == 12 and small.head.in_features == 12
    assert plan.slices == (("", 1, 16, 40, 16, 28),)
    torch.testing.assert_close(small(x), _zeroed(model, plan, "b")(x), rtol=1e-5, atol=1e-5)


def test_untraceable_code_keeps_the_piece_whole() -> None:
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="cannot be traced by torch.fx"):
        plan = ns.plan(model, x, ns.PruneConfig(ratio=0.5))
    assert set(plan.meta["kept_whole"]) >= {"a"}
    assert not plan.slices
    small = ns.apply(model, plan)
    assert small.a.out_channels == 64
    assert small(x).shape == model(x).shape


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (["", 1, 0, 64], "expected [module, dim, start, end, new start, new end]"),
        (["", 1, 0, 64, 0, 65], "slices[0][5]"),
        (["", 1, 10, 5, 0, 1], "slices[0][3]"),
        (["", 1, 8, 64, 9, 20], "slices[0][4]"),
        (["", "1", 0, 64, 0, 32], "slices[0][1]"),
        ([3, 1, 0, 64, 0, 32], "slices[0][0]"),
    ],
)
def test_hostile_slice_entries_are_refused_naming_the_field(pruned, entry, message) -> None:
    _, small, _ = pruned
    data = ns.plan_of(small).to_dict()
    data["slices"] = [entry]
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ns.Plan.from_dict(data)


def test_a_slice_the_code_does_not_have_is_refused_before_anything_changes(pruned) -> None:
    model, small, x = pruned
    plan = ns.plan_of(small)
    bad = ns.Plan.from_dict({**plan.to_dict(), "slices": [["", 1, 0, 48, 0, 24]]})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PlanError, match="has no such slice"):
        ns.apply(model, bad, inplace=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    other = ns.Plan.from_dict({**plan.to_dict(), "slices": [["nope", 1, 0, 64, 0, 32]]})
    with pytest.raises(PlanError, match="'nope'"):
        ns.apply(model, other)
