"""ns.save / ns.load: plan JSON + safetensors, checksums, rebuilding the base model."""

from __future__ import annotations

import copy
import hashlib
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


def test_plan_digest_binds_plan_to_weights(tmp_path: Path) -> None:
    from safetensors import safe_open

    model, x = factory()
    ns.save(ns.prune(model, x, ratio=0.5), tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    digest = hashlib.sha256((tmp_path / "plan.json").read_bytes()).hexdigest()
    assert metadata["netsculpt.plan_sha256"] == digest
    assert json.loads((tmp_path / "netsculpt.json").read_text())["format"] == "netsculpt.save/2"


def test_folders_of_the_previous_format_still_load(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model, x = factory()
    small = ns.prune(model, x, ratio=0.5)
    ns.save(small, tmp_path)
    # what netsculpt.save/1 wrote: no plan digest in the weights
    save_file(load_file(str(tmp_path / "model.safetensors")), str(tmp_path / "model.safetensors"))
    manifest = json.loads((tmp_path / "netsculpt.json").read_text())
    manifest["files"]["model.safetensors"] = hashlib.sha256(
        (tmp_path / "model.safetensors").read_bytes()
    ).hexdigest()
    (tmp_path / "netsculpt.json").write_text(json.dumps(manifest))
    with pytest.raises(SaveLoadError, match="does not record which plan.json"):
        ns.load(tmp_path, base=factory()[0])
    manifest["format"] = "netsculpt.save/1"
    (tmp_path / "netsculpt.json").write_text(json.dumps(manifest))
    again = ns.load(tmp_path, base=factory()[0])
    torch.testing.assert_close(call_model(again, x), call_model(small, x), rtol=0, atol=0)


def test_save_replaces_links_instead_of_writing_through_them(tmp_path: Path) -> None:
    model, x = factory()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "plan.json").symlink_to(target)
    (folder / "netsculpt.json").symlink_to(target)
    ns.save(ns.prune(model, x, ratio=0.5), folder)
    assert target.read_text() == "keep me"
    assert not (folder / "plan.json").is_symlink() and not (folder / "netsculpt.json").is_symlink()
    ns.load(folder, base=factory()[0])


def test_factorised_model_without_slicing_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 32)
    small = ns.factorize(model, rank_ratio=0.25)
    ns.save(small, tmp_path)
    again = ns.load(tmp_path, base=copy.deepcopy(model))
    torch.testing.assert_close(call_model(again, x), call_model(small, x))


def test_builtin_factory_needs_no_trust(tmp_path: Path) -> None:
    from netsculpt.tasks.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    ns.save(model, tmp_path, base_factory="netsculpt.tasks.digits:DigitsCNN")
    again = ns.load(tmp_path)
    torch.testing.assert_close(call_model(again, x), call_model(model, x))
