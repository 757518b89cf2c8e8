"""Bad calls to ns.save, ns.load, ns.apply and Plan.from_json: each raises its named error."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    ExampleInputsError,
    FactoryError,
    InputError,
    NetsculptError,
    PlanError,
    SaveLoadError,
    UntrustedCodeError,
)
from netsculpt.pruning.plan import Plan


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 3)
    ).eval()


X = torch.randn(2, 3, 8, 8)


@dataclass
class Ctx:
    tmp: Path
    model: nn.Module
    small: nn.Module
    plan: Plan
    folder: Path
    a_file: Path

    def meta(self) -> nn.Module:
        with torch.device("meta"):
            return build()

    def edited(self, **changes: Any) -> Plan:
        """The plan with some fields replaced (as a Python caller might build one)."""
        fields = {
            "tensors": self.plan.tensors,
            "shapes": self.plan.shapes,
            "attrs": self.plan.attrs,
            "groups": self.plan.groups,
            "removed": self.plan.removed,
            "meta": self.plan.meta,
            "lowrank": self.plan.lowrank,
        }
        fields.update(changes)
        return Plan(**fields)

    def tensors_with(self, name: str, dims: dict[int, Any]) -> dict[str, Any]:
        out = {k: dict(v) for k, v in self.plan.tensors.items()}
        out[name] = dims
        return out


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    tmp = tmp_path_factory.mktemp("bad-calls")
    model = build()
    plan = ns.plan(model, X, ratio=0.5)
    small = ns.apply(model, plan)
    folder = tmp / "saved"
    ns.save(small, folder, base_factory="no_such_module_xyz:build", example_inputs=X)
    a_file = tmp / "a-file"
    a_file.write_text("not a folder")
    return Ctx(tmp, model, small, plan, folder, a_file)


def _huge_plan(c: Ctx) -> str:
    data = c.plan.to_dict()
    data["shapes"]["0.weight"] = [10**12, 3, 3, 3]
    data["tensors"]["0.weight"]["0"] = [[0, 10**12]]
    return json.dumps(data)


Call = Callable[[Ctx], Any]
CASES: list[tuple[str, Call, type[NetsculptError], str]] = [
    # save
    ("save-model-none", lambda c: ns.save(None, c.tmp / "o"), InputError, "torch.nn.Module"),
    ("save-model-str", lambda c: ns.save("digits", c.tmp / "o"), InputError, "torch.nn.Module"),
    ("save-model-meta", lambda c: ns.save(c.meta(), c.tmp / "o"), InputError, "meta device"),
    ("save-path-none", lambda c: ns.save(c.small, None), InputError, "folder path"),
    ("save-path-int", lambda c: ns.save(c.small, 5), InputError, "folder path"),
    ("save-path-bytes", lambda c: ns.save(c.small, b"out"), InputError, "folder path"),
    ("save-path-empty", lambda c: ns.save(c.small, ""), InputError, "non-empty"),
    ("save-path-nul", lambda c: ns.save(c.small, "a\0b"), InputError, "non-empty"),
    ("save-path-is-file", lambda c: ns.save(c.small, c.a_file), SaveLoadError, "cannot create"),
    ("save-under-file", lambda c: ns.save(c.small, c.a_file / "x"), SaveLoadError, "cannot create"),
    (
        "save-factory-int",
        lambda c: ns.save(c.small, c.tmp / "o", base_factory=5),
        FactoryError,
        "package.module:function",
    ),
    (
        "save-factory-form",
        lambda c: ns.save(c.small, c.tmp / "o", base_factory="build"),
        FactoryError,
        "package.module:function",
    ),
    (
        "save-plan-str",
        lambda c: ns.save(c.small, c.tmp / "o", plan="plan.json"),
        InputError,
        "netsculpt.Plan",
    ),
    (
        "save-plan-dict",
        lambda c: ns.save(c.small, c.tmp / "o", plan=c.plan.to_dict()),
        InputError,
        "netsculpt.Plan",
    ),
    (
        "save-plan-other-model",
        lambda c: ns.save(c.model, c.tmp / "o", plan=c.plan),
        InputError,
        "the plan makes",
    ),
    (
        "save-inputs-object",
        lambda c: ns.save(c.small, c.tmp / "o", example_inputs=object()),
        InputError,
        "cannot save example inputs",
    ),
    (
        "save-inputs-int-keys",
        lambda c: ns.save(c.small, c.tmp / "o", example_inputs={1: X}),
        InputError,
        "string keys",
    ),
    (
        "save-inputs-mixed-tuple",
        lambda c: ns.save(c.small, c.tmp / "o", example_inputs=(X, "x")),
        InputError,
        "only tensors",
    ),
    (
        "save-inputs-nan",
        lambda c: ns.save(c.small, c.tmp / "o", example_inputs=torch.full((1,), float("nan"))),
        ExampleInputsError,
        "NaN",
    ),
    # load
    ("load-path-none", lambda c: ns.load(None), InputError, "folder path"),
    ("load-path-int", lambda c: ns.load(3), InputError, "folder path"),
    ("load-missing", lambda c: ns.load(c.tmp / "nope"), SaveLoadError, "does not exist"),
    ("load-a-file", lambda c: ns.load(c.a_file), SaveLoadError, "not a folder"),
    ("load-empty-dir", lambda c: ns.load(c.tmp), SaveLoadError, "has no netsculpt.json"),
    ("load-base-str", lambda c: ns.load(c.folder, base="digits"), InputError, "base must be"),
    ("load-base-meta", lambda c: ns.load(c.folder, base=c.meta()), InputError, "meta device"),
    (
        "load-strict-str",
        lambda c: ns.load(c.folder, base=build(), strict="yes"),
        InputError,
        "strict",
    ),
    ("load-trust-str", lambda c: ns.load(c.folder, trust_code="yes"), InputError, "trust_code"),
    ("load-trust-int", lambda c: ns.load(c.folder, trust_code=1), InputError, "trust_code"),
    (
        "load-wrong-base",
        lambda c: ns.load(c.folder, base=nn.Linear(3, 3)),
        PlanError,
        "does not have",
    ),
    ("load-untrusted", lambda c: ns.load(c.folder), UntrustedCodeError, "no_such_module_xyz"),
    (
        "load-trusted-missing",
        lambda c: ns.load(c.folder, trust_code=True),
        FactoryError,
        "cannot import",
    ),
    # apply
    ("apply-model-none", lambda c: ns.apply(None, c.plan), InputError, "torch.nn.Module"),
    ("apply-model-str", lambda c: ns.apply("digits", c.plan), InputError, "torch.nn.Module"),
    ("apply-model-meta", lambda c: ns.apply(c.meta(), c.plan), InputError, "meta device"),
    ("apply-plan-none", lambda c: ns.apply(c.model, None), InputError, "netsculpt.Plan"),
    ("apply-plan-dict", lambda c: ns.apply(c.model, c.plan.to_dict()), InputError, "Plan"),
    (
        "apply-plan-json",
        lambda c: ns.apply(c.model, c.plan.to_json()),
        InputError,
        "Plan.from_json",
    ),
    (
        "apply-inplace-str",
        lambda c: ns.apply(c.model, c.plan, inplace="yes"),
        InputError,
        "inplace",
    ),
    ("apply-other-model", lambda c: ns.apply(nn.Linear(3, 3), c.plan), PlanError, "does not have"),
    ("apply-pruned-model", lambda c: ns.apply(c.small, c.plan), PlanError, "expects"),
    (
        "apply-unsorted",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: (3, 1, 2)}))),
        PlanError,
        "sorted ascending",
    ),
    (
        "apply-duplicate",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: (1, 1)}))),
        PlanError,
        "unique",
    ),
    (
        "apply-negative",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: (-1, 2)}))),
        PlanError,
        "within [0, 16)",
    ),
    (
        "apply-float-index",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: (0.5,)}))),
        PlanError,
        "integers",
    ),
    (
        "apply-bool-index",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: (True,)}))),
        PlanError,
        "integers",
    ),
    (
        "apply-str-indices",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {0: "012"}))),
        PlanError,
        "sequence of integers",
    ),
    (
        "apply-huge-range",
        lambda c: ns.apply(
            c.model, c.edited(tensors=c.tensors_with("0.weight", {0: range(10**12)}))
        ),
        PlanError,
        "more than the 16",
    ),
    (
        "apply-dim-past-rank",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("0.weight", {9: (0,)}))),
        PlanError,
        "outside its rank",
    ),
    (
        "apply-no-shape",
        lambda c: ns.apply(c.model, c.edited(tensors=c.tensors_with("4.bias", {0: (0,)}))),
        PlanError,
        "original shape",
    ),
    (
        "apply-attr-forward",
        lambda c: ns.apply(c.model, c.edited(attrs=(("0", "forward", 1),))),
        PlanError,
        "not an integer size attribute",
    ),
    (
        "apply-attr-class",
        lambda c: ns.apply(c.model, c.edited(attrs=(("0", "__class__", 1),))),
        PlanError,
        "not an integer size attribute",
    ),
    (
        "apply-attr-grow",
        lambda c: ns.apply(c.model, c.edited(attrs=(("0", "groups", 2),))),
        PlanError,
        "in [0, 1]",
    ),
    (
        "apply-removed-root",
        lambda c: ns.apply(c.model, c.edited(removed=(("", "zeros"),))),
        PlanError,
        "does not have",
    ),
    (
        "apply-removed-kind",
        lambda c: ns.apply(c.model, c.edited(removed=(("2", "exec"),))),
        PlanError,
        "not a known kind",
    ),
    (
        "apply-lowrank-bn",
        lambda c: ns.apply(c.model, c.edited(lowrank=(("1", 2),))),
        PlanError,
        "BatchNorm2d",
    ),
    # reading plans
    ("plan-json-bytes", lambda c: Plan.from_json(b"\xff\xfe"), PlanError, "not UTF-8"),
    ("plan-json-deep", lambda c: Plan.from_json("[" * 100_000), PlanError, "nests"),
    ("plan-json-int", lambda c: Plan.from_json(5), PlanError, "JSON text"),  # type: ignore[arg-type]
    ("plan-dict-list", lambda c: Plan.from_dict([]), PlanError, "not a netsculpt plan"),  # type: ignore[arg-type]
    ("plan-json-10e12", lambda c: Plan.from_json(_huge_plan(c)), PlanError, "kept indices in all"),
    (
        "plan-shapes-mismatch",
        lambda c: Plan.from_json(c.plan.to_json(), shapes={}),
        PlanError,
        "does not have",
    ),
]


def test_the_table_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 25
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "call", "error", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_call_raises_its_error(
    ctx: Ctx, name: str, call: Call, error: type[NetsculptError], words: str
) -> None:
    with pytest.raises(NetsculptError) as info:
        call(ctx)
    assert type(info.value) is error, info.value
    assert words in str(info.value)


def test_a_refused_plan_leaves_the_model_untouched_in_place(ctx: Ctx) -> None:
    model = copy.deepcopy(ctx.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # a plan whose first tensors are fine and whose last change is refused
    bad = ctx.edited(attrs=(("0", "out_channels", 8), ("4", "__class__", 1)))
    with pytest.raises(PlanError, match="__class__"):
        ns.apply(model, bad, inplace=True)
    assert model[0].out_channels == 16 and model[0].weight.shape == (16, 3, 3, 3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_a_good_plan_still_applies_in_place(ctx: Ctx) -> None:
    model = copy.deepcopy(ctx.model)
    small = ns.apply(model, ctx.plan, inplace=True)
    assert small is model and model[0].out_channels == 8
    torch.testing.assert_close(small(X), ctx.small(X))
