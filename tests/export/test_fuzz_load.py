"""Fuzzing save folders: a mutated plan or manifest loads correctly or raises NetsculptError.

Never another exception, never a hang. Mutations replace, delete or add one value anywhere in
``plan.json`` or ``netsculpt.json``; the manifest is re-hashed each time (the attacker's edit),
so the checks after the checksums are the ones exercised. When the weights are not re-bound
to the edited plan, a load that succeeds must give the original outputs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import NetsculptError
from netsculpt.export.save import PLAN_DIGEST, load_inputs
from netsculpt.pruning.plan import Plan

FUZZ = settings(
    max_examples=100,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


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


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@functools.cache
def good() -> tuple[Path, torch.Tensor]:
    folder = Path(tempfile.mkdtemp(prefix="netsculpt-fuzz-")) / "good"
    small = ns.prune(build(), X, ratio=0.5)
    ns.save(small, folder, base_factory="no_such_module_xyz:build", example_inputs=X)
    with torch.no_grad():
        return folder, call_model(small, X)


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*here, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if op == "delete":
        del parent[key]
    elif op == "add" and isinstance(parent, list):
        parent.insert(key, value)
    elif op == "add":
        parent[f"{key}_extra"] = value
    else:
        parent[key] = value
    return doc


INTERESTING = st.sampled_from([0, 1, -1, 2, 3, 7, 8, 15, 16, 17, 31, 2**31, 10**12, -(10**12)])
SCALARS = (
    st.none()
    | st.booleans()
    | INTERESTING
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["0", "1", "__class__", "forward", "zeros:2", "identity", "0.weight"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
OPS = st.sampled_from(["replace", "replace", "delete", "add"])


def _rehash(folder: Path, *names: str) -> None:
    manifest_path = folder / "netsculpt.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        for name in names:
            files[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    except (ValueError, KeyError, TypeError):
        return  # a manifest mutated into something without 'files': nothing to re-hash
    manifest_path.write_text(json.dumps(manifest))


def _copy(tmp: Path) -> Path:
    folder = tmp / "saved"
    shutil.copytree(good()[0], folder)
    return folder


@given(data=st.data(), op=OPS, value=VALUES, rebind=st.booleans())
@FUZZ
def test_mutated_plan_loads_correctly_or_is_refused(
    data: st.DataObject, op: str, value: Any, rebind: bool
) -> None:
    original = json.loads((good()[0] / "plan.json").read_text())
    path = data.draw(st.sampled_from(_paths(original)), label="path")
    mutated = _mutate(original, path, op, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(Path(tmp))
        text = json.dumps(mutated, indent=1).encode()
        (folder / "plan.json").write_bytes(text)
        if rebind:  # rewrite the weights bound to the new plan, as a thorough attacker would
            tensors = load_file(str(folder / "model.safetensors"))
            metadata = {PLAN_DIGEST: hashlib.sha256(text).hexdigest()}
            save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
        _rehash(folder, "plan.json", "model.safetensors")
        try:
            model = ns.load(folder, base=build())
        except NetsculptError:
            return
        with torch.no_grad():
            out = call_model(model, X)
        if not rebind or mutated == original:
            torch.testing.assert_close(out, good()[1])


@given(data=st.data(), op=OPS, value=VALUES, with_base=st.booleans())
@FUZZ
def test_mutated_manifest_loads_correctly_or_is_refused(
    data: st.DataObject, op: str, value: Any, with_base: bool
) -> None:
    original = json.loads((good()[0] / "netsculpt.json").read_text())
    path = data.draw(st.sampled_from(_paths(original)), label="path")
    mutated = _mutate(original, path, op, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(Path(tmp))
        (folder / "netsculpt.json").write_text(json.dumps(mutated))
        try:
            model = ns.load(folder, base=build() if with_base else None)
        except NetsculptError:
            pass
        else:
            with torch.no_grad():
                torch.testing.assert_close(call_model(model, X), good()[1])
        try:
            inputs = load_inputs(folder)
        except NetsculptError:
            return
        if inputs is not None and isinstance(inputs, torch.Tensor):
            torch.testing.assert_close(inputs, X)


@given(data=st.data(), op=OPS, value=VALUES)
@settings(FUZZ, max_examples=200)
def test_mutated_plan_data_applies_or_is_refused(data: st.DataObject, op: str, value: Any) -> None:
    original = json.loads((good()[0] / "plan.json").read_text())
    path = data.draw(st.sampled_from(_paths(original)), label="path")
    mutated = _mutate(original, path, op, value)
    try:
        plan = Plan.from_dict(mutated)
        small = ns.apply(build(), plan)
    except NetsculptError:
        return
    assert isinstance(small, nn.Module)
