"""ns.save / ns.load: plan JSON + safetensors, checksums, rebuilding the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import (
    ChecksumError,
    FactoryError,
    PlanError,
    SaveLoadError,
    UntrustedCodeError,
)
from netsculpt.export.save import resolve_factory
from netsculpt.testing.zoo import ZOO


def factory() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 3),
    )
    return model.eval(), torch.randn(2, 3, 8, 8)


def test_round_trip_with_base(tmp_path: Path) -> None:
    model, x = factory()
    small = ns.prune(model, x, ratio=0.5)
    ns.save(small, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "netsculpt.json",
        "plan.json",
        "model.safetensors",
    }
    again = ns.load(tmp_path, base=factory()[0])
    torch.testing.assert_close(call_model(again, x), call_model(small, x), rtol=0, atol=0)
    assert again[0].out_channels == small[0].out_channels < 16


def test_round_trip_with_factory_string(tmp_path: Path) -> None:
    model, x = factory()
    small = ns.prune(model, x, ratio=0.5)
    ns.save(small, tmp_path, base_factory="test_save:factory")
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        ns.load(tmp_path)
    again = ns.load(tmp_path, trust_code=True)
    torch.testing.assert_close(call_model(again, x), call_model(small, x), rtol=0, atol=0)


def test_transformers_model_reloads_without_base(tmp_path: Path) -> None:
    model, inputs = ZOO["hf_llama_gqa"]()
    small = ns.prune(model, inputs, ratio=0.5)
    ns.save(small, tmp_path)
    again = ns.load(tmp_path)
    assert type(again) is type(model)
    torch.testing.assert_close(
        call_model(again, inputs).logits, call_model(small, inputs).logits, rtol=0, atol=0
    )


def test_tampered_or_missing_files_are_refused(tmp_path: Path) -> None:
    model, x = factory()
    ns.save(ns.prune(model, x, ratio=0.5), tmp_path)
    plan_file = tmp_path / "plan.json"
    data = json.loads(plan_file.read_text())
    data["meta"]["ratio"] = 0.1
    plan_file.write_text(json.dumps(data))
    with pytest.raises(ChecksumError, match="changed after it was saved"):
        ns.load(tmp_path, base=factory()[0])
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(SaveLoadError, match="missing"):
        ns.load(tmp_path, base=factory()[0])
    with pytest.raises(SaveLoadError, match="does not exist"):
        ns.load(tmp_path / "nope")


def test_plain_model_without_reference_needs_base(tmp_path: Path) -> None:
    model, x = factory()
    ns.save(ns.prune(model, x, ratio=0.5), tmp_path)
    with pytest.raises(SaveLoadError, match="pass base="):
        ns.load(tmp_path)


def test_wrong_base_is_refused(tmp_path: Path) -> None:
    model, x = factory()
    ns.save(ns.prune(model, x, ratio=0.5), tmp_path)
    with pytest.raises(PlanError, match="does not have|expects"):
        ns.load(tmp_path, base=nn.Sequential(nn.Linear(3, 3)))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_colon", "not of the form"),
        ("no_such_pkg_xyz:f", "cannot import"),
        ("test_save:nothing", "has no attribute"),
    ],
)
def test_bad_factory_strings(spec: str, match: str) -> None:
    with pytest.raises(FactoryError, match=match):
        resolve_factory(spec)
