"""ns.save_supernet / ns.load_supernet: a super-network folder reloads to the same
super-network (every sub-network computes the same outputs, extracted models are equal),
without ordering the units again; hostile or foreign folders raise errors naming the fix."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_model
from supernet_io_helpers import TiedLM, TinyCNN, tied_lm, tiny_cnn

import netsculpt as ns
from netsculpt.errors import (
    ChecksumError,
    FactoryError,
    InputError,
    SaveLoadError,
    UntrustedCodeError,
)
from netsculpt.export._folder import sha256
from netsculpt.pruning import importance
from netsculpt.supernets.io import DESCRIPTION, INPUTS, WEIGHTS, architecture_signature


def _every_arch(supernet: ns.Supernet) -> list[dict[str, Any]]:
    names = [c.name for c in supernet.space]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(c.options for c in supernet.space))
    ]


def _out(supernet: ns.Supernet, arch: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), supernet.use(arch):
        return supernet(x)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ns.Supernet, Path, torch.Tensor]:
    """A TinyCNN super-network whose weights moved away from the model's (as training
    moves them), saved once."""
    model, x = tiny_cnn()
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.25, 0.5, 1.0), depth=True))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in supernet.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = ns.save_supernet(supernet, tmp_path_factory.mktemp("supernet") / "cnn")
    return supernet, folder, x


@pytest.fixture
def copy(saved: tuple[ns.Supernet, Path, torch.Tensor], tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[1], tmp_path / "copy"))


def _edit(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = folder / DESCRIPTION
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_round_trip_gives_the_same_super_network(
    saved: tuple[ns.Supernet, Path, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    supernet, folder, x = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted([DESCRIPTION, WEIGHTS, INPUTS])

    def no_ordering(*args: Any) -> Any:
        raise AssertionError("loading ordered the units again")

    monkeypatch.setitem(importance.IMPORTANCE, "magnitude", no_ordering)
    loaded = ns.load_supernet(folder, base=TinyCNN())  # a fresh model: random weights
    assert not loaded.training
    assert loaded.config == supernet.config
    assert loaded.orders == supernet.orders
    assert loaded.space.to_dict() == supernet.space.to_dict()
    assert loaded.fixed == supernet.fixed
    torch.testing.assert_close(loaded.example_inputs, supernet.example_inputs)
    archs = _every_arch(supernet)
    assert len(archs) == supernet.space.size == 18
    supernet.eval()
    for arch in archs:
        torch.testing.assert_close(_out(loaded, arch, x), _out(supernet, arch, x))
    for arch in (supernet.smallest(), supernet.largest(), archs[7]):
        small, again = supernet.extract(arch), loaded.extract(arch)
        assert ns.plan_of(again).to_dict() == ns.plan_of(small).to_dict()
        torch.testing.assert_close(again.state_dict(), small.state_dict())
        torch.testing.assert_close(again(x), small(x))


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    model, ids = tied_lm()
    supernet = ns.elastic(model, ids, ns.ElasticConfig(keep=(0.5, 1.0)))
    ns.save_supernet(supernet, tmp_path / "lm")
    loaded = ns.load_supernet(tmp_path / "lm", base=TiedLM())
    assert loaded.model.out.weight is loaded.model.embed.weight
    for arch in _every_arch(supernet):
        torch.testing.assert_close(_out(loaded, arch, ids), _out(supernet, arch, ids))


def test_a_factory_named_by_the_folder_runs_only_when_trusted(
    saved: tuple[ns.Supernet, Path, torch.Tensor], tmp_path: Path
) -> None:
    supernet, _folder, x = saved
    folder = ns.save_supernet(supernet, tmp_path / "f", base_factory="supernet_io_helpers:tiny_cnn")
    with pytest.raises(UntrustedCodeError, match=r"supernet_io_helpers:tiny_cnn.*trust_code=True"):
        ns.load_supernet(folder)
    loaded = ns.load_supernet(folder, trust_code=True)
    arch = supernet.smallest()
    torch.testing.assert_close(_out(loaded, arch, x), _out(supernet.eval(), arch, x))
    with pytest.raises(FactoryError, match="package.module:function"):
        ns.save_supernet(supernet, tmp_path / "g", base_factory="tests/helpers.py:tiny_cnn")


def test_a_folder_without_a_factory_needs_base(copy: Path) -> None:
    with pytest.raises(SaveLoadError, match=r"TinyCNN.*pass base="):
        ns.load_supernet(copy)


@pytest.mark.parametrize(
    ("base", "words"),
    [
        (
            lambda: TinyCNN(width=24),
            r"made from a .*TinyCNN.*'block.0.bias' is \[16\] there, \[24\] here",
        ),
        (lambda: TiedLM(), r"made from a .*TinyCNN, but the base model is a .*TiedLM"),
    ],
)
def test_a_base_of_another_architecture_is_refused(
    copy: Path, base: Callable[[], torch.nn.Module], words: str
) -> None:
    with pytest.raises(SaveLoadError, match=words) as info:
        ns.load_supernet(copy, base=base())
    assert "pass base=<a freshly built, unpruned TinyCNN>" in str(info.value)


def test_the_signature_depends_on_names_and_shapes_only() -> None:
    a, b = TinyCNN(), TinyCNN()
    with torch.no_grad():
        b.head.weight.fill_(3.0)
    assert architecture_signature(a) == architecture_signature(b)
    assert architecture_signature(a) != architecture_signature(TinyCNN(width=8))


def _order_of(data: dict[str, Any]) -> list[int]:
    return data["orders"][next(iter(data["orders"]))]


HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], Any], type[Exception], str]] = {
    "wrong format": (lambda d: d.update(format="netsculpt.save/2"), SaveLoadError, "format"),
    "unknown field": (lambda d: d.update(code="os:system"), SaveLoadError, "'code'"),
    "missing field": (lambda d: d.pop("orders"), SaveLoadError, "'orders' is missing"),
    "bad config": (
        lambda d: d["config"].update(keep=[2.0]),
        SaveLoadError,
        r"'config' is not an ElasticConfig.*keep fraction",
    ),
    "order repeats a unit": (
        lambda d: _order_of(d).__setitem__(1, _order_of(d)[0]),
        SaveLoadError,
        "not a permutation",
    ),
    "order of the wrong size": (
        lambda d: d["orders"].update({next(iter(d["orders"])): list(range(5))}),
        SaveLoadError,
        r"orders 5 units, but the group has 16",
    ),
    "order of a foreign group": (
        lambda d: d["orders"].update({"nowhere": [0, 1]}),
        SaveLoadError,
        "'nowhere', which is not an elastic group",
    ),
    "order not integers": (
        lambda d: d["orders"].update({next(iter(d["orders"])): ["0"]}),
        SaveLoadError,
        "unit positions",
    ),
    "space altered": (
        lambda d: d["space"]["choices"][0].update(options=[1, 16]),
        SaveLoadError,
        "space rebuilt on the base model differs",
    ),
    "bad depth choice": (
        lambda d: d["space"]["choices"][-1].update(options=[True]),
        SaveLoadError,
        "depth choice",
    ),
    "fixed altered": (
        lambda d: d["fixed"].update({"stem.0": "x"}),
        SaveLoadError,
        "fixed groups",
    ),
    "bad signature": (
        lambda d: d["model"].update(signature="zz"),
        SaveLoadError,
        "'model'",
    ),
    "malformed factory": (
        lambda d: d.update(base={"kind": "factory", "factory": "not a factory"}),
        SaveLoadError,
        "'base.factory'",
    ),
    "foreign file listed": (
        lambda d: d["files"].update({"../../etc/passwd": "0" * 64}),
        SaveLoadError,
        "'files'",
    ),
    "no inputs": (lambda d: d.update(inputs=None), SaveLoadError, "example inputs"),
    "bad inputs layout": (
        lambda d: d.update(inputs={"kind": "pickle"}),
        SaveLoadError,
        "'inputs'",
    ),
    "weights changed": (
        lambda d: d["files"].update({WEIGHTS: "0" * 64}),
        ChecksumError,
        "SHA-256 mismatch",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_tampered_descriptions_are_refused(copy: Path, case: str) -> None:
    change, error, words = HOSTILE[case]
    _edit(copy, change)
    with pytest.raises(error, match=words):
        ns.load_supernet(copy, base=TinyCNN())


def test_a_factory_read_from_the_folder_is_not_run(copy: Path) -> None:
    _edit(copy, lambda d: d.update(base={"kind": "factory", "factory": "os:getcwd"}))
    with pytest.raises(UntrustedCodeError, match="'os:getcwd'"):
        ns.load_supernet(copy)


def test_broken_files_are_refused(copy: Path, tmp_path: Path) -> None:
    (copy / DESCRIPTION).write_text("{not json")
    with pytest.raises(SaveLoadError, match="not valid JSON"):
        ns.load_supernet(copy, base=TinyCNN())
    (copy / DESCRIPTION).write_text("[1, 2]")
    with pytest.raises(SaveLoadError, match="not an object"):
        ns.load_supernet(copy, base=TinyCNN())


def test_weights_of_other_shapes_are_refused(copy: Path) -> None:
    save_model(TinyCNN(width=24), str(copy / WEIGHTS))
    _edit(copy, lambda d: d["files"].update({WEIGHTS: sha256(copy / WEIGHTS)}))
    with pytest.raises(SaveLoadError, match=r"'block.0.bias' has shape \(24,\)"):
        ns.load_supernet(copy, base=TinyCNN())


def test_a_linked_weights_file_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    shutil.move(copy / WEIGHTS, outside)
    (copy / WEIGHTS).symlink_to(outside)
    with pytest.raises(SaveLoadError, match="symbolic link"):
        ns.load_supernet(copy, base=TinyCNN())


def test_other_folders_and_arguments_are_refused(
    saved: tuple[ns.Supernet, Path, torch.Tensor], tmp_path: Path
) -> None:
    supernet, folder, x = saved
    with pytest.raises(SaveLoadError, match="does not exist"):
        ns.load_supernet(tmp_path / "nowhere", base=TinyCNN())
    ns.save(supernet.extract(supernet.smallest()), tmp_path / "pruned", example_inputs=x)
    with pytest.raises(SaveLoadError, match="load it with ns.load"):
        ns.load_supernet(tmp_path / "pruned", base=TinyCNN())
    with pytest.raises(InputError, match="trust_code must be True or False"):
        ns.load_supernet(folder, base=TinyCNN(), trust_code="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="base must be a torch.nn.Module"):
        ns.load_supernet(folder, base="digits")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="takes the Supernet made by ns.elastic"):
        ns.save_supernet(supernet.model, tmp_path / "x")  # type: ignore[arg-type]


def test_a_builtin_factory_runs_without_trust_code(copy: Path) -> None:
    # netsculpt's own factory is run; the model it builds is then compared with the signature
    _edit(
        copy,
        lambda d: d.update(base={"kind": "factory", "factory": "netsculpt.tasks.digits:DigitsCNN"}),
    )
    with pytest.raises(SaveLoadError, match=r"TinyCNN, but the base model is a .*\.DigitsCNN"):
        ns.load_supernet(copy)


def test_a_transformers_model_is_rebuilt_from_its_config(tmp_path: Path) -> None:
    from netsculpt._inputs import call_model, flatten_outputs
    from netsculpt.testing.zoo import ZOO

    model, inputs = ZOO["hf_bert"]()
    supernet = ns.elastic(model.eval(), inputs, ns.ElasticConfig(keep=(0.5, 1.0)))
    ns.save_supernet(supernet, tmp_path / "bert")
    data = json.loads((tmp_path / "bert" / DESCRIPTION).read_text())
    assert data["base"]["kind"] == "transformers"
    loaded = ns.load_supernet(tmp_path / "bert")  # no base, no code run
    for arch in (supernet.largest(), supernet.smallest(), supernet.sample(0)):
        with torch.no_grad(), supernet.use(arch), loaded.use(arch):
            expected = flatten_outputs(call_model(supernet, inputs))
            got = flatten_outputs(call_model(loaded, inputs))
        torch.testing.assert_close(got, expected)
    _edit(tmp_path / "bert", lambda d: d["base"].update({"class": "os.system"}))
    with pytest.raises(SaveLoadError, match="not a transformers model class"):
        ns.load_supernet(tmp_path / "bert")
