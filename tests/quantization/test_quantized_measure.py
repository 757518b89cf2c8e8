"""ns.measure and compare_latency on a quantized model: onnxruntime latency, size on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.measurement.api import interleaved_latency


class SmallCNN(nn.Module):
    """Conv-ReLU-Conv-Flatten-Linear on 1x8x8 inputs: weights and biases, no buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(torch.flatten(x, 1))


class Tied(nn.Module):
    """An embedding and an output head sharing one weight, plus a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 20, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.ones(6, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids) * self.scale.float())


@pytest.fixture(scope="module")
def quantized(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[nn.Module, torch.Tensor, ns.QuantizedModel]:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(4, 1, 8, 8)
    calib = [torch.randn(4, 1, 8, 8) for _ in range(3)]
    path = tmp_path_factory.mktemp("q") / "cnn.int8.onnx"
    return model, x, ns.quantize(model, x, calib=calib, path=path)


def test_quantize_records_the_float_models_counts(
    quantized: tuple[nn.Module, torch.Tensor, ns.QuantizedModel],
) -> None:
    model, x, q = quantized
    assert q.params == ns.count_params(model) == 8 * 9 + 8 + 8 * 8 * 9 + 8 + 512 * 10 + 10
    assert q.macs == ns.count_macs(model, x) > 0
    recipe = json.loads(q.path.with_suffix(".json").read_text())
    assert recipe["params"] == q.params and recipe["macs"] == q.macs
    assert q.recipe["params"] == q.params


def test_measure_times_the_quantized_file_in_onnxruntime(
    quantized: tuple[nn.Module, torch.Tensor, ns.QuantizedModel],
) -> None:
    model, x, q = quantized
    m = ns.measure(q, x, warmup=2, repeats=7, threads=1)
    assert m.backend == "onnxruntime"
    assert m.params == ns.count_params(model)
    assert m.macs == ns.count_macs(model, x)
    assert m.size_bytes == q.path.stat().st_size == q.quantized_bytes
    assert 0 < m.latency_ms_median <= m.latency_ms_p90
    assert m.repeats == 7 and m.threads == 1
    assert m.peak_memory_bytes is None and m.sparsity == {}
    data = m.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["size_bytes"] == m.size_bytes
    assert "kB" in str(m) and "onnxruntime" in str(m)
    # the module returned by as_module() is measured as the quantized model it holds
    wrapped = ns.measure(q.as_module(), x, warmup=1, repeats=3, backend="onnxruntime")
    assert wrapped.backend == "onnxruntime" and wrapped.size_bytes == m.size_bytes
    assert wrapped.params == m.params and wrapped.macs == m.macs


def test_a_quantized_model_with_the_torch_backend_names_the_fix(
    quantized: tuple[nn.Module, torch.Tensor, ns.QuantizedModel],
) -> None:
    _, x, q = quantized
    for candidate in (q, q.as_module()):
        with pytest.raises(ns.InputError, match="onnxruntime") as info:
            ns.measure(candidate, x, backend="torch")
        assert "backend='torch'" in str(info.value)
    with pytest.raises(ns.InputError, match=r"models\['int8'\].*backend='onnxruntime'"):
        ns.compare_latency({"int8": q}, x, backend="torch")


def test_measure_of_a_module_reports_its_tensor_bytes() -> None:
    model = SmallCNN()
    m = ns.measure(model, torch.randn(2, 1, 8, 8), warmup=0, repeats=2, memory=False)
    expected = sum(p.numel() * p.element_size() for p in model.parameters())
    assert m.size_bytes == expected == 4 * ns.count_params(model)
    assert m.backend == "torch"
    tied = Tied()
    m = ns.measure(tied, torch.randint(0, 20, (2, 5)), warmup=0, repeats=2, memory=False)
    # the shared 20x6 float32 weight once, the float64 buffer of 6
    assert m.size_bytes == 20 * 6 * 4 + 6 * 8


def test_compare_latency_times_float_and_int8_side_by_side(
    quantized: tuple[nn.Module, torch.Tensor, ns.QuantizedModel],
) -> None:
    model, x, q = quantized
    medians = ns.compare_latency(
        {"float": model, "int8": q}, x, backend="onnxruntime", rounds=2, repeats=3, warmup=1
    )
    assert set(medians) == {"float", "int8"}
    assert all(value > 0 for value in medians.values())
    times = interleaved_latency(
        {"int8": q.as_module(), "float": model},
        x,
        backend="onnxruntime",
        rounds=2,
        repeats=2,
        warmup=0,
    )
    assert {name: len(values) for name, values in times.items()} == {"int8": 4, "float": 4}


def test_an_onnx_source_records_its_float_initializers(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = SmallCNN().eval()
    x = torch.randn(4, 1, 8, 8)
    source = ns.export_onnx(model, x, tmp_path / "cnn.onnx")
    q = ns.quantize(source, x, calib=[torch.randn(4, 1, 8, 8)], path=tmp_path / "cnn.int8.onnx")
    assert q.macs is None and q.recipe["macs"] is None
    assert q.params == ns.count_params(model)
    m = ns.measure(q, x, warmup=0, repeats=2)
    assert m.macs == 0 and m.params == ns.count_params(model)
    assert m.size_bytes == q.path.stat().st_size


def test_a_deleted_quantized_file_names_the_fix(tmp_path: Path) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    q = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"), path=tmp_path / "m.int8.onnx")
    q.path.unlink()
    with pytest.raises(ns.InputError, match="quantize again"):
        ns.measure(q, x, repeats=1)
