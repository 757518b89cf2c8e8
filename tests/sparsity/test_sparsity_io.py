"""Sparse models save and reload with their zeros (safetensors), and export to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sparsity_helpers import TinyConvNet, mlp

import netsculpt as ns
from netsculpt.errors import SaveLoadError
from netsculpt.sparsity import (
    MagnitudeConfig,
    Masks,
    NMConfig,
    load_sparse,
    read_sparsity,
    save_sparse,
)
from netsculpt.sparsity.masks import weight_sparsity


def test_save_load_round_trips_exactly_with_masks_folded(tmp_path) -> None:
    model = TinyConvNet()
    masks = ns.sparsify(model, MagnitudeConfig(sparsity=0.8)).masks
    masks.attach(model)  # a parametrised model: saving folds the masks in
    x = torch.randn(2, 4, 5, 5)
    expected = model(x).detach()
    path = tmp_path / "sparse.safetensors"
    save_sparse(model, path)
    again = load_sparse(TinyConvNet(), path)
    torch.testing.assert_close(again(x), expected)
    for name, mask in masks.items():
        w = again.get_parameter(name)
        assert torch.equal(w != 0, mask & (w != 0))  # zeros stay zeros
        assert int((w[~mask] != 0).sum()) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    recorded = read_sparsity(path)
    assert recorded == pytest.approx(weight_sparsity(again), abs=1e-6)
    assert recorded["conv2.weight"] > 0.5


def test_save_with_masks_given(tmp_path) -> None:
    model = mlp()
    masks = ns.sparsify(model, NMConfig(n=2, m=4)).masks
    save_sparse(model, tmp_path / "nm.safetensors", masks=masks)
    again = load_sparse(mlp(seed=5), tmp_path / "nm.safetensors")
    assert weight_sparsity(again) == pytest.approx({n: 0.5 for n in masks})


def test_load_refuses_foreign_and_mismatched_files(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(SaveLoadError, match="no sparse model file"):
        load_sparse(mlp(), tmp_path / "missing.safetensors")
    save_file({"a": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(SaveLoadError, match="not written by"):
        load_sparse(mlp(), tmp_path / "foreign.safetensors")
    save_sparse(mlp(), tmp_path / "mlp.safetensors")
    with pytest.raises(SaveLoadError, match="does not fit"):
        load_sparse(TinyConvNet(), tmp_path / "mlp.safetensors")


def test_sparse_model_exports_to_onnx_with_its_zeros(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    result = ns.sparsify(mlp(), MagnitudeConfig(sparsity=0.9))
    x = torch.randn(3, 16)
    path = ns.export_onnx(result.model, x, tmp_path / "sparse.onnx")
    assert ns.check_onnx(result.model, x, path) < 1e-4
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    zeros = sum(int((w == 0).sum()) for w in weights if w.ndim == 2)
    assert zeros == result.masks.numel() - result.masks.kept()
    assert np.isfinite(sum(float(np.abs(w).sum()) for w in weights))


def test_masks_keyed_by_name_survive_a_round_trip_of_the_model(tmp_path) -> None:
    model = mlp()
    result = ns.sparsify(model, MagnitudeConfig(sparsity=0.5))
    save_sparse(result.model, tmp_path / "a.safetensors")
    again = load_sparse(mlp(seed=9), tmp_path / "a.safetensors")
    read = Masks.from_model(again)
    assert all(torch.equal(read[n], result.masks[n]) for n in result.masks)


def test_ns_measure_reports_the_sparsity_of_a_sparsified_model() -> None:
    result = ns.sparsify(mlp(), MagnitudeConfig(sparsity=0.75, scope="layer"))
    m = ns.measure(result.model, torch.randn(4, 16), repeats=1, warmup=0, memory=False)
    for name, s in result.layer_sparsity().items():
        assert m.sparsity[name] == pytest.approx(s)
    assert m.sparsity["*"] == pytest.approx(result.sparsity)
