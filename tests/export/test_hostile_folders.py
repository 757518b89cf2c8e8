"""Crafted save folders: each is refused with a NetsculptError, and none runs any code.

Every folder carries Python files (``ns_canary_helpers.py``, ``payload.py``, ...) and sits on
``sys.path``; importing any of them writes a canary file and sets an environment variable.
After each case, and once more at the end, no canary may have fired and no such module may be
in ``sys.modules``. Cases that edit a file also re-hash the manifest (and, for plan edits,
re-bind the weights to the new plan), so the check under test is the one that refuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import (
    ChecksumError,
    NetsculptError,
    PlanError,
    SaveLoadError,
    UntrustedCodeError,
)
from netsculpt.export.save import PLAN_DIGEST, load_inputs

CANARY_MODULES = ("ns_canary_helpers", "payload", "ns_canary_payload")
CANARY_ENV = "NETSCULPT_CANARY_FIRED"


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 3),
    ).eval()


INPUTS = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _canary_source(canary_dir: Path) -> str:
    return (
        "import os, pathlib\n"
        f"pathlib.Path({str(canary_dir)!r}, 'fired-' + __name__).write_text('imported')\n"
        f"os.environ[{CANARY_ENV!r}] = __name__\n"
        "def build():\n"
        f"    pathlib.Path({str(canary_dir)!r}, 'called-' + __name__).write_text('called')\n"
        "    raise SystemExit('canary factory called')\n"
        "class Evil:\n"
        "    config_class = None\n"
    )


@pytest.fixture(scope="module")
def canary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary")


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory: pytest.TempPathFactory, canary_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("good") / "saved"
    small = ns.prune(build(), INPUTS, ratio=0.5)
    ns.save(small, folder, base_factory="ns_canary_helpers:build", example_inputs=INPUTS)
    for name in CANARY_MODULES:
        (folder / f"{name}.py").write_text(_canary_source(canary_dir))
    return folder


def _assert_no_canary(canary_dir: Path) -> None:
    assert sorted(p.name for p in canary_dir.iterdir()) == []
    assert CANARY_ENV not in os.environ
    assert not [m for m in CANARY_MODULES if m in sys.modules]


# ---------------------------------------------------------------------------------------------
# file surgery


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rehash(folder: Path, *names: str) -> None:
    manifest = json.loads((folder / "netsculpt.json").read_text())
    for name in names:
        manifest["files"][name] = _sha((folder / name).read_bytes())
    (folder / "netsculpt.json").write_text(json.dumps(manifest))


def _rebind(folder: Path) -> None:
    """Re-save the weights bound to the current plan.json, and re-hash both."""
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    digest = _sha((folder / "plan.json").read_bytes())
    save_file(tensors, str(weights), metadata={PLAN_DIGEST: digest})
    _rehash(folder, "plan.json", "model.safetensors")


Mutation = Callable[[Path], None]


def manifest(edit: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(folder: Path) -> None:
        data = json.loads((folder / "netsculpt.json").read_text())
        edit(data)
        (folder / "netsculpt.json").write_text(json.dumps(data))

    return mutate


def manifest_bytes(raw: bytes) -> Mutation:
    def mutate(folder: Path) -> None:
        (folder / "netsculpt.json").write_bytes(raw)

    return mutate


def base(ref: Any) -> Mutation:
    return manifest(lambda m: m.__setitem__("base", ref))


def transformers_class(name: str, config: Any = None) -> Mutation:
    return base({"kind": "transformers", "class": name, "config": config or {}})


def plan(edit: Callable[[dict[str, Any]], Any], *, rebind: bool = True) -> Mutation:
    def mutate(folder: Path) -> None:
        data = json.loads((folder / "plan.json").read_text())
        edit(data)
        (folder / "plan.json").write_text(json.dumps(data))
        if rebind:
            _rebind(folder)
        else:
            _rehash(folder, "plan.json")

    return mutate


def plan_bytes(raw: bytes) -> Mutation:
    def mutate(folder: Path) -> None:
        (folder / "plan.json").write_bytes(raw)
        _rebind(folder)

    return mutate


def runs(name: str, dim: str, value: Any) -> Mutation:
    return plan(lambda p: p["tensors"][name].__setitem__(dim, value))


def attr(item: Any) -> Mutation:
    return plan(lambda p: p.__setitem__("attrs", [item]))


def weights(edit: Callable[[dict[str, torch.Tensor], dict[str, str]], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / "model.safetensors"
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        edit(tensors, metadata)
        save_file(tensors, str(path), metadata=metadata)
        _rehash(folder, "model.safetensors")

    return mutate


def raw_file(name: str, change: Callable[[bytes], bytes]) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / name
        path.write_bytes(change(path.read_bytes()))
        _rehash(folder, name)

    return mutate


def symlink_outside(name: str) -> Mutation:
    def mutate(folder: Path) -> None:
        outside = folder.parent / f"outside-{name}"
        shutil.move(folder / name, outside)
        (folder / name).symlink_to(outside)

    return mutate


def unlink(name: str) -> Mutation:
    return lambda folder: (folder / name).unlink()


def replace_with_dir(name: str) -> Mutation:
    def mutate(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return mutate


def replace_with_fifo(name: str) -> Mutation:
    def mutate(folder: Path) -> None:
        (folder / name).unlink()
        os.mkfifo(folder / name)

    return mutate


def huge_manifest(folder: Path) -> None:
    with (folder / "netsculpt.json").open("wb") as f:
        f.truncate(64 * 2**20 + 16)


def swap_kept_units(folder: Path) -> None:
    """Same counts, other units (the attacker's edit that used to load with wrong outputs)."""
    plan(lambda p: _shift_units(p), rebind=False)(folder)


def _shift_units(p: dict[str, Any]) -> None:
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        p["tensors"][name]["0"] = [[8, 16]]
    p["tensors"]["3.weight"]["1"] = [[8, 16]]


def _drop(key: str) -> Callable[[dict[str, torch.Tensor], dict[str, str]], None]:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        del tensors[key]

    return edit


# ---------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Mutation
    error: type[NetsculptError]
    match: str
    with_base: bool = False
    call: str = "load"


C = Case
S, P, U = SaveLoadError, PlanError, UntrustedCodeError
CASES = [
    # code named by the folder
    C("factory-helpers", lambda f: None, U, "'ns_canary_helpers:build'"),
    C("factory-os-abort", base({"kind": "factory", "factory": "os:abort"}), U, "'os:abort'"),
    C("factory-exec", base({"kind": "factory", "factory": "builtins:exec"}), U, "builtins:exec"),
    C("factory-subproc", base({"kind": "factory", "factory": "subprocess:run"}), U, "trust_code"),
    C("factory-nested", base({"kind": "factory", "factory": "payload.x:Evil.m"}), U, "pass base="),
    C("factory-py-path", base({"kind": "factory", "factory": "/tmp/x.py:build"}), U, "--trust"),
    C("factory-malformed", base({"kind": "factory", "factory": "no colon"}), S, "base.factory"),
    C("factory-not-str", base({"kind": "factory", "factory": 5}), S, "base.factory"),
    C("hf-payload", transformers_class("payload.Evil"), S, "not a transformers model class"),
    C("hf-canary", transformers_class("ns_canary_payload.Evil"), S, "not a transformers model"),
    C("hf-unknown-name", transformers_class("transformers.payload.Evil"), S, "exports no 'Evil'"),
    C("hf-autoconfig", transformers_class("transformers.AutoConfig"), S, "not a model class"),
    C("hf-builtins", transformers_class("transformers.__builtins__"), S, "not a transformers"),
    C("hf-logging", transformers_class("transformers.logging"), S, "not a model class"),
    C("hf-automodel", transformers_class("transformers.AutoModel"), S, "not a model class"),
    C("hf-keyword", transformers_class("transformers.import"), S, "not a transformers model"),
    C("hf-dotted-attr", transformers_class("transformers.os.system"), S, "system"),
    C("hf-config-list", base({"kind": "transformers", "class": "x", "config": []}), S, "config"),
    C("hf-class-int", base({"kind": "transformers", "class": 1, "config": {}}), S, "base.class"),
    C(
        "hf-huge-config",
        transformers_class(
            "transformers.LlamaForCausalLM",
            {"hidden_size": 65536, "vocab_size": 1_000_000, "num_hidden_layers": 64},
        ),
        S,
        "64 times the 744 values model.safetensors holds",
    ),
    C(
        "hf-runaway-layers",
        transformers_class(
            "transformers.LlamaForCausalLM",
            {
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 10**6,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": 32,
            },
        ),
        S,
        "base.config builds a model of more than",
    ),
    C(
        "hf-other-arch",
        transformers_class(
            "transformers.LlamaForCausalLM",
            {
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": 32,
            },
        ),
        P,
        "does not have",
    ),
    C("kind-class", base({"kind": "class", "class": "payload.Evil"}), S, "pass base="),
    C("kind-pickle", base({"kind": "pickle", "data": "gASV"}), S, "base.kind"),
    C("base-missing", manifest(lambda m: m.pop("base")), S, "'base'"),
    # the manifest itself
    C("manifest-list", manifest_bytes(b"[1, 2]"), S, "JSON array, not an object"),
    C("manifest-number", manifest_bytes(b"42"), S, "JSON number"),
    C("manifest-string", manifest_bytes(b'"netsculpt.save/2"'), S, "JSON string"),
    C("manifest-null", manifest_bytes(b"null"), S, "JSON null"),
    C("manifest-not-utf8", manifest_bytes(b'{"format": "\xff\xfe"}'), S, "not UTF-8"),
    C("manifest-deep-list", manifest_bytes(b"[" * 100_000), S, "nests"),
    C("manifest-deep-dict", manifest_bytes(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), S, "nests"),
    C("manifest-huge", huge_manifest, S, "larger than"),
    C("manifest-bad-json", manifest_bytes(b'{"format": '), S, "not valid JSON"),
    C("manifest-big-int", manifest_bytes(b'{"format": ' + b"9" * 5000 + b"}"), S, "not valid"),
    C("manifest-empty", manifest_bytes(b""), S, "not valid JSON"),
    C("format-wrong", manifest(lambda m: m.__setitem__("format", "netsculpt.save/9")), S, "format"),
    C("format-missing", manifest(lambda m: m.pop("format")), S, "has format None"),
    C("format-list", manifest(lambda m: m.__setitem__("format", ["x"])), S, "has format"),
    C("manifest-extra", manifest(lambda m: m.__setitem__("exec", "rm")), S, "not a field"),
    C("manifest-torch", manifest(lambda m: m.__setitem__("torch", 2)), S, "'torch'"),
    C("files-list", manifest(lambda m: m.__setitem__("files", ["plan.json"])), S, "'files'"),
    C(
        "files-etc-passwd",
        manifest(lambda m: m["files"].__setitem__("/etc/passwd", "0" * 64)),
        S,
        "does not write",
    ),
    C(
        "files-dotdot",
        manifest(lambda m: m["files"].__setitem__("../x", "0" * 64)),
        S,
        "does not write",
    ),
    C(
        "files-subdir",
        manifest(lambda m: m["files"].__setitem__("a/plan.json", "0" * 64)),
        S,
        "does not write",
    ),
    C(
        "files-bad-digest",
        manifest(lambda m: m["files"].__setitem__("plan.json", "zz")),
        S,
        "SHA-256",
    ),
    C("files-no-plan", manifest(lambda m: m["files"].pop("plan.json")), S, "plan.json"),
    C(
        "files-no-weights",
        manifest(lambda m: m["files"].pop("model.safetensors")),
        S,
        "model.safetensors",
    ),
    C(
        "inputs-layout",
        manifest(lambda m: m.__setitem__("inputs", {"kind": "pickle"})),
        S,
        "'inputs'",
    ),
    C(
        "inputs-n-huge",
        manifest(lambda m: m.__setitem__("inputs", {"kind": "tuple", "n": 10**12})),
        S,
        "inputs.n",
    ),
    C(
        "inputs-unlisted",
        manifest(lambda m: m["files"].pop("inputs.safetensors")),
        S,
        "inputs.safetensors",
    ),
    # files of the folder
    C("weights-missing", unlink("model.safetensors"), S, "missing"),
    C("plan-missing", unlink("plan.json"), S, "missing"),
    C("plan-symlink", symlink_outside("plan.json"), S, "symbolic link"),
    C("weights-symlink", symlink_outside("model.safetensors"), S, "symbolic link"),
    C("manifest-symlink", symlink_outside("netsculpt.json"), S, "symbolic link"),
    C("plan-dir", replace_with_dir("plan.json"), S, "not a regular file"),
    C("weights-fifo", replace_with_fifo("model.safetensors"), S, "not a regular file"),
    C("plan-edited", lambda f: (f / "plan.json").write_text("{}"), ChecksumError, "changed"),
    C(
        "weights-edited",
        lambda f: (f / "model.safetensors").write_bytes(b"x"),
        ChecksumError,
        "changed",
    ),
    # safetensors
    C(
        "weights-truncated",
        raw_file("model.safetensors", lambda b: b[: len(b) // 2]),
        S,
        "not a readable safetensors",
    ),
    C(
        "weights-garbage-header",
        raw_file("model.safetensors", lambda b: b[:8] + b"\x00" * 40),
        S,
        "not a readable safetensors",
    ),
    C(
        "weights-huge-header",
        raw_file("model.safetensors", lambda b: b"\xff" * 8 + b[8:]),
        S,
        "not a readable safetensors",
    ),
    C("weights-empty", raw_file("model.safetensors", lambda b: b""), S, "safetensors"),
    C(
        "weights-int-dtype",
        weights(lambda t, m: t.__setitem__("0.weight", t["0.weight"].long())),
        S,
        "stored as I64",
        with_base=True,
    ),
    C(
        "weights-shape",
        weights(lambda t, m: t.__setitem__("0.weight", torch.zeros(8, 3, 3, 2))),
        S,
        "has shape",
        with_base=True,
    ),
    C("weights-missing-tensor", weights(_drop("6.bias")), S, "do not fit", with_base=True),
    C(
        "weights-extra-tensor",
        weights(lambda t, m: t.__setitem__("evil", torch.zeros(1))),
        S,
        "'evil'",
        with_base=True,
    ),
    C("weights-no-digest", weights(lambda t, m: m.clear()), S, "does not record"),
    C(
        "weights-other-digest",
        weights(lambda t, m: m.__setitem__(PLAN_DIGEST, "0" * 64)),
        S,
        "plan.json does not belong to model.safetensors",
    ),
    C("plan-same-count-swap", swap_kept_units, S, "plan.json does not belong to model.safetensors"),
    # the plan (re-bound to the weights, so its own checks refuse it)
    C("plan-list", plan_bytes(b"[]"), S, "not a netsculpt plan"),
    C(
        "plan-version",
        plan(lambda p: p.__setitem__("format", "netsculpt.plan/9")),
        S,
        "not a netsculpt plan",
    ),
    C("plan-not-utf8", plan_bytes(b'{"format": "\xc3\x28"}'), S, "not UTF-8"),
    C("plan-deep", plan_bytes(b"[" * 100_000 + b"]" * 100_000), S, "nests"),
    C("plan-extra-field", plan(lambda p: p.__setitem__("code", "x")), S, "not a field"),
    C("plan-no-tensors", plan(lambda p: p.pop("tensors")), S, "tensors"),
    C("idx-negative", runs("0.weight", "0", [[-1, 2]]), S, "outside"),
    C("idx-out-of-range", runs("0.weight", "0", [[0, 17]]), S, "outside"),
    C("idx-duplicate", runs("0.weight", "0", [[0, 4], [2, 6]]), S, "unique and sorted"),
    C("idx-unsorted", runs("0.weight", "0", [[8, 10], [0, 2]]), S, "unique and sorted"),
    C("idx-bool", runs("0.weight", "0", [[False, True]]), S, "expected an integer"),
    C("idx-float", runs("0.weight", "0", [[0.0, 8.0]]), S, "expected an integer"),
    C("idx-string", runs("0.weight", "0", [["0", "8"]]), S, "expected an integer"),
    C("idx-flat", runs("0.weight", "0", [0, 1, 2]), S, "[start, stop) pair"),
    C("idx-empty-run", runs("0.weight", "0", [[3, 3]]), S, "outside"),
    C("idx-huge-run", runs("0.weight", "0", [[0, 10**12]]), S, "outside"),
    C("idx-many-runs", runs("0.weight", "0", [[i, i + 1] for i in range(40)]), S, "index runs"),
    C(
        "idx-10e12-declared",
        plan(
            lambda p: (
                p["shapes"].__setitem__("0.weight", [10**12, 3, 3, 3]),
                p["tensors"]["0.weight"].__setitem__("0", [[0, 10**12]]),
            )
        ),
        P,
        "expects '0.weight' of shape (1000000000000, 3, 3, 3)",
        with_base=True,
    ),
    C(
        "idx-10e12-declared-untrusted",
        plan(
            lambda p: (
                p["shapes"].__setitem__("0.weight", [10**12, 3, 3, 3]),
                p["tensors"]["0.weight"].__setitem__("0", [[0, 10**12]]),
            )
        ),
        U,
        "trust_code=True",
    ),
    C("dim-past-rank", runs("0.weight", "7", [[0, 1]]), S, "past the rank"),
    C("dim-negative", runs("0.weight", "-1", [[0, 1]]), S, "dimension must be written"),
    C("shape-rank-huge", plan(lambda p: p["shapes"].__setitem__("0.weight", [1] * 40)), S, "rank"),
    C("tensor-no-shape", plan(lambda p: p["shapes"].pop("0.weight")), S, "original shape"),
    C(
        "tensor-unknown",
        plan(
            lambda p: (
                p["shapes"].__setitem__("9.weight", [4]),
                p["tensors"].__setitem__("9.weight", {"0": [[0, 2]]}),
            )
        ),
        P,
        "does not have",
        with_base=True,
    ),
    C(
        "shape-mismatch",
        plan(lambda p: p["shapes"].__setitem__("0.weight", [16, 3, 3, 5])),
        P,
        "expects",
        with_base=True,
    ),
    C("attr-class", attr(["0", "__class__", 1]), S, "not a size attribute"),
    C("attr-forward", attr(["0", "forward", 1]), S, "not a size attribute"),
    C("attr-training", attr(["0", "training", 1]), S, "not a size attribute"),
    C("attr-dict", attr(["0", "__dict__", 1]), S, "not a size attribute"),
    C("attr-keyword", attr(["0", "class", 1]), S, "not a size attribute"),
    C("attr-unknown", attr(["0", "num_bananas", 1]), P, "not an integer size", with_base=True),
    C("attr-method", attr(["0", "get_extra_state_size", 1]), P, "not an integer", with_base=True),
    C("attr-module", attr(["nope", "out_channels", 1]), P, "does not have", with_base=True),
    C("attr-grow", attr(["0", "out_channels", 99]), P, "in [0, 16]", with_base=True),
    C("attr-negative", attr(["0", "out_channels", -1]), S, "outside"),
    C("attr-bool", attr(["0", "out_channels", True]), S, "expected an integer"),
    C("attr-str", attr(["0", "out_channels", "16"]), S, "expected an integer"),
    C("attr-arity", plan(lambda p: p.__setitem__("attrs", [["0", "groups"]])), S, "[module"),
    C(
        "removed-root",
        plan(lambda p: p.__setitem__("removed", [["", "zeros:1"]])),
        S,
        "whole model",
    ),
    C(
        "removed-unknown",
        plan(lambda p: p.__setitem__("removed", [["x.y", "zeros"]])),
        P,
        "does not have",
        with_base=True,
    ),
    C(
        "removed-kind",
        plan(lambda p: p.__setitem__("removed", [["2", "pickle"]])),
        S,
        "unknown kind",
    ),
    C(
        "removed-arity",
        plan(lambda p: p.__setitem__("removed", [["2", "zeros:1000000000"]])),
        S,
        "arity",
    ),
    C("lowrank-zero", plan(lambda p: p.__setitem__("lowrank", [["6", 0]])), S, "outside"),
    C(
        "lowrank-huge",
        plan(lambda p: p.__setitem__("lowrank", [["6", 10**9]])),
        P,
        "rank",
        with_base=True,
    ),
    C(
        "lowrank-bn",
        plan(lambda p: p.__setitem__("lowrank", [["1", 2]])),
        P,
        "BatchNorm2d",
        with_base=True,
    ),
    C("lowrank-twice", plan(lambda p: p.__setitem__("lowrank", [["6", 1], ["6", 1]])), S, "twice"),
    C(
        "group-out-of-range",
        plan(lambda p: p["groups"][0].__setitem__("kept", [[0, 99]])),
        S,
        "outside",
    ),
    C("group-size-huge", plan(lambda p: p["groups"][0].__setitem__("size", 10**15)), S, "outside"),
    C("meta-list", plan(lambda p: p.__setitem__("meta", [])), S, "meta"),
    # load_inputs reads the same folder
    C(
        "inputs-fn-layout",
        manifest(lambda m: m.__setitem__("inputs", {"kind": "tuple", "n": 2})),
        S,
        "needs",
        call="load_inputs",
    ),
    C(
        "inputs-fn-symlink",
        symlink_outside("inputs.safetensors"),
        S,
        "symbolic link",
        call="load_inputs",
    ),
    C(
        "inputs-fn-garbage",
        raw_file("inputs.safetensors", lambda b: b"\x08" + b"\x00" * 7 + b"{}"),
        S,
        "safetensors",
        call="load_inputs",
    ),
    C("inputs-fn-list", manifest_bytes(b"[]"), S, "not an object", call="load_inputs"),
]


@pytest.fixture
def on_path(good_folder: Path, canary_dir: Path) -> Iterator[None]:
    sys.path.insert(0, str(good_folder))
    try:
        yield
    finally:
        sys.path.remove(str(good_folder))
    _assert_no_canary(canary_dir)


def test_the_table_is_large_and_named_uniquely() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_folder_is_refused(
    case: Case, good_folder: Path, canary_dir: Path, tmp_path: Path, on_path: None
) -> None:
    folder = tmp_path / "saved"
    shutil.copytree(good_folder, folder, symlinks=True)
    case.mutate(folder)
    with pytest.raises(NetsculptError) as info:
        if case.call == "load_inputs":
            load_inputs(folder)
        else:
            ns.load(folder, base=build() if case.with_base else None)
    assert type(info.value) is case.error, info.value
    assert case.match in str(info.value)
    _assert_no_canary(canary_dir)


def test_the_untouched_folder_loads_with_a_base(good_folder: Path) -> None:
    small = ns.prune(build(), INPUTS, ratio=0.5)
    again = ns.load(good_folder, base=build())
    torch.testing.assert_close(call_model(again, INPUTS), call_model(small, INPUTS))
    torch.testing.assert_close(load_inputs(good_folder), INPUTS)


def test_trusted_factory_folder_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "ns_trusted_factory.py").write_text(
        "from test_hostile_folders import build, INPUTS\n\n"
        "def make():\n"
        "    return build(), INPUTS\n"
    )
    monkeypatch.syspath_prepend(str(code))
    small = ns.prune(build(), INPUTS, ratio=0.5)
    ns.save(small, tmp_path / "saved", base_factory="ns_trusted_factory:make")
    with pytest.raises(UntrustedCodeError):
        ns.load(tmp_path / "saved")
    assert "ns_trusted_factory" not in sys.modules
    again = ns.load(tmp_path / "saved", trust_code=True)
    torch.testing.assert_close(call_model(again, INPUTS), call_model(small, INPUTS))
    sys.modules.pop("ns_trusted_factory", None)


def test_no_canary_fired_after_all_cases(canary_dir: Path) -> None:
    _assert_no_canary(canary_dir)
