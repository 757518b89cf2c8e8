"""ONNX export: round trips against PyTorch, dict inputs, dynamic batch, errors."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from netsculpt.errors import ExportError, InputError, UnknownNameError
from netsculpt.export import onnx as ns_onnx
from netsculpt.export.onnx import (
    check_onnx,
    export_onnx,
    onnx_feeds,
    onnxruntime_session,
)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class TwoHeads(nn.Module):
    """A CNN with BatchNorm, a residual block and two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Residual(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.cls = nn.Linear(8, 5)
        self.reg = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.pool(self.block(self.stem(x))).flatten(1)
        return self.cls(features), self.reg(features)


def trained_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give the BatchNorm layers non-trivial running statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 3 + 1)
    return model


def run_onnx(path, example_inputs) -> list[np.ndarray]:
    session = onnxruntime_session(path)
    return session.run(None, onnx_feeds(example_inputs, [i.name for i in session.get_inputs()]))


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    """A CNN (BatchNorm, residual, two outputs) exported once for several tests."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = trained_bn(TwoHeads(), x)  # left in training mode on purpose
    folder = tmp_path_factory.mktemp("cnn")
    path = export_onnx(model, x, folder / "sub" / "cnn.onnx")
    assert path == folder / "sub" / "cnn.onnx" and path.is_file()
    assert model.training
    return model, x, path


def test_cnn_with_batchnorm_and_residual_round_trips(cnn_export) -> None:
    model, x, path = cnn_export
    model = copy.deepcopy(model)
    proto = onnx.load(str(path))
    assert {p.key: p.value for p in proto.metadata_props}["netsculpt.exporter"] == "dynamo"
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    assert check_onnx(model, x, path) < 1e-4
    bigger = torch.randn(5, 3, 16, 16)  # dynamic batch
    model.eval()
    with torch.no_grad():
        expected = model(bigger)
    for got, want in zip(run_onnx(path, bigger), expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=1e-3)


def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return transformers.BertModel(config)


def test_bert_with_dict_inputs_round_trips(tmp_path) -> None:
    model = tiny_bert()
    ids = torch.randint(0, 100, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
    path = export_onnx(model, inputs, tmp_path / "bert.onnx")
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert check_onnx(model, inputs, path) < 1e-4
    # a padded batch of 3: dynamic batch, and the mask really is an input
    ids3 = torch.randint(0, 100, (3, 12))
    mask3 = torch.ones(3, 12, dtype=torch.long)
    mask3[1, 7:] = 0
    batch = {"input_ids": ids3, "attention_mask": mask3, "use_cache": False}
    got = run_onnx(path, batch)
    with torch.no_grad():
        want = model.eval()(**batch)
    torch.testing.assert_close(
        torch.from_numpy(got[0]), want.last_hidden_state, atol=1e-4, rtol=1e-3
    )
    torch.testing.assert_close(torch.from_numpy(got[1]), want.pooler_output, atol=1e-4, rtol=1e-3)


def test_tuple_inputs_are_named_by_position(tmp_path) -> None:
    class Add(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
            return (a + b) * scale

    inputs = (torch.randn(2, 3), torch.randn(2, 3), 2.0)
    path = export_onnx(Add(), inputs, tmp_path / "add.onnx", exporter="torchscript")
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_0", "input_1"]
    assert {p.key: p.value for p in proto.metadata_props}["netsculpt.exporter"] == "torchscript"
    np.testing.assert_allclose(
        run_onnx(path, inputs)[0], ((inputs[0] + inputs[1]) * 2).numpy(), rtol=1e-6
    )


def test_check_onnx_names_the_output_that_differs(cnn_export) -> None:
    model, x, path = cnn_export
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.reg.bias += 0.5  # only the second output moves
    with pytest.raises(ExportError) as info:
        check_onnx(model, x, path)
    message = str(info.value)
    assert "output 1" in message and "0.5" in message and "atol" in message


def test_export_raises_when_onnxruntime_disagrees(tmp_path, monkeypatch) -> None:
    real = ns_onnx.onnxruntime_session

    class Skewed:
        def __init__(self, session) -> None:
            self._session = session

        def get_inputs(self):
            return self._session.get_inputs()

        def run(self, names, feeds):
            return [out + 1e-2 for out in self._session.run(names, feeds)]

    monkeypatch.setattr(ns_onnx, "onnxruntime_session", lambda *a, **k: Skewed(real(*a, **k)))
    with pytest.raises(ExportError, match=r"output 0 .* differs from PyTorch by up to 0\.01"):
        export_onnx(nn.Linear(4, 3), torch.randn(2, 4), tmp_path / "lin.onnx")


def test_export_failure_names_both_exporters_and_a_hint(tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError(f"no symbolic for my_op (dynamo={kwargs.get('dynamo')})")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError) as info:
        export_onnx(nn.Linear(4, 3), torch.randn(2, 4), tmp_path / "lin.onnx")
    message = str(info.value)
    assert "dynamo exporter: RuntimeError: no symbolic for my_op (dynamo=True)" in message
    assert "torchscript exporter: RuntimeError: no symbolic for my_op (dynamo=False)" in message
    assert "dynamic_batch=False" in message


def test_export_rejects_unknown_exporter_and_inputs_without_tensors(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="'tvm'"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.onnx", exporter="tvm")
    with pytest.raises(ValueError, match="no tensor"):
        export_onnx(nn.Identity(), (3.0,), tmp_path / "m.onnx")


class _TokenModel(nn.Module):
    """Embedding -> Linear over [batch, sequence] token ids, masked by an attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(input_ids)) * attention_mask.unsqueeze(-1)


def test_dynamic_sequence_runs_token_inputs_at_any_length(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TokenModel().eval()

    def tokens(batch: int, length: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(length)
        ids = torch.randint(0, 50, (batch, length), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    fixed = export_onnx(model, tokens(4, 12), tmp_path / "fixed.onnx")
    free = export_onnx(model, tokens(4, 12), tmp_path / "free.onnx", dynamic_sequence=True)
    other = tokens(3, 7)
    with pytest.raises(Exception, match="(?i)dimension"):
        onnxruntime_session(fixed).run(None, {k: v.numpy() for k, v in other.items()})
    (got,) = onnxruntime_session(free).run(None, {k: v.numpy() for k, v in other.items()})
    torch.testing.assert_close(torch.from_numpy(got), model(**other), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="dynamic_sequence"):
        export_onnx(model, tokens(4, 12), tmp_path / "bad.onnx", dynamic_sequence="yes")  # type: ignore[arg-type]
