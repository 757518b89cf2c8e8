"""ns.measure: parameter and MAC counts, latency fields, memory, sparsity."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from netsculpt.errors import ExampleInputsError, InputError, UnknownNameError
from netsculpt.measurement.api import (
    Measurement,
    count_macs,
    count_params,
    measure,
    weight_sparsity,
)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4, bias=False)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


# --------------------------------------------------------------------------- params


def test_count_params_plain_model() -> None:
    assert count_params(nn.Linear(4, 3)) == 4 * 3 + 3
    assert count_params(ConvNet()) == (3 * 8 * 9 + 8) + (8 * 2 * 9) + (200 * 10 + 10)


def test_count_params_counts_a_tied_weight_once() -> None:
    model = Tied()
    assert count_params(model) == 20 * 6
    assert sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)) == 2 * 20 * 6


def test_count_params_counts_parameters_over_the_same_memory_once() -> None:
    model = nn.Sequential(nn.Linear(5, 5, bias=False), nn.Linear(5, 5, bias=False))
    model[1].weight = nn.Parameter(model[0].weight.data)  # another Parameter, same storage
    assert count_params(model) == 25


# --------------------------------------------------------------------------- MACs


def test_count_macs_of_convs_and_linear_match_the_closed_form() -> None:
    n = 2
    conv1 = n * 8 * 10 * 10 * (3 * 3 * 3)  # out elements x (in/groups x kh x kw)
    conv2 = n * 8 * 5 * 5 * (2 * 3 * 3)  # groups=4: 2 input channels per group
    fc = n * 200 * 10
    assert count_macs(ConvNet(), torch.randn(n, 3, 10, 10)) == conv1 + conv2 + fc


def test_count_macs_sees_attention_and_the_encoder_fast_path() -> None:
    b, s, d, h, ff = 2, 5, 16, 2, 32
    layer = nn.TransformerEncoderLayer(d, h, ff, batch_first=True, dropout=0.0)
    projections = b * s * d * 3 * d + b * s * d * d
    attention = 2 * b * h * s * s * (d // h)  # q @ k^T and p @ v
    feed_forward = 2 * b * s * d * ff
    assert torch.backends.mha.get_fastpath_enabled()
    assert count_macs(layer, torch.randn(b, s, d)) == projections + attention + feed_forward
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    assert layer.training  # restored


def test_count_macs_of_bert_sdpa_equals_eager_attention() -> None:
    transformers = pytest.importorskip("transformers")
    counts = {}
    for impl in ("sdpa", "eager"):
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
            attn_implementation=impl,
        )
        ids = torch.randint(0, 50, (2, 12))
        counts[impl] = count_macs(transformers.BertModel(config), {"input_ids": ids})
    assert counts["sdpa"] == counts["eager"]
    assert counts["sdpa"] > 0


# --------------------------------------------------------------------------- measure


def test_measure_fields_are_consistent() -> None:
    model = ConvNet()
    x = torch.randn(2, 3, 10, 10)
    m = measure(model, x, warmup=1, repeats=7)
    assert isinstance(m, Measurement)
    assert m.params == count_params(model)
    assert m.macs == count_macs(model, x)
    assert m.latency_ms_median > 0
    assert m.latency_ms_p90 >= m.latency_ms_median
    assert m.repeats == 7
    assert m.backend == "torch"
    assert m.threads == 1
    assert m.peak_memory_bytes is not None and m.peak_memory_bytes > 0
    data = m.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["macs"] == m.macs
    assert "ms median" in str(m)
    with pytest.raises(AttributeError):
        m.params = 0  # type: ignore[misc]


class Recorder(nn.Module):
    """Records the state the forward runs under."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.seen: list[tuple[int, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(
            (torch.get_num_threads(), self.training, torch.is_inference_mode_enabled())
        )
        return self.fc(x)


def test_measure_uses_threads_eval_and_inference_mode_then_restores_them() -> None:
    model = Recorder().train()
    m = measure(model, torch.randn(3, 4), warmup=2, repeats=4, threads=2, memory=False)
    assert m.threads == 2
    timed = model.seen[-4:]
    assert all(seen == (2, False, True) for seen in timed), timed
    assert torch.get_num_threads() == 1
    assert model.training
    assert m.peak_memory_bytes is None


def test_measure_default_threads_is_torch_current_count() -> None:
    m = measure(nn.Linear(4, 4), torch.randn(1, 4), warmup=0, repeats=2, memory=False)
    assert m.threads == torch.get_num_threads() == 1


def test_measure_rejects_bad_counts_and_unknown_backend() -> None:
    model, x = nn.Linear(4, 4), torch.randn(1, 4)
    with pytest.raises(InputError, match="repeats"):
        measure(model, x, repeats=0)
    with pytest.raises(InputError, match="warmup"):
        measure(model, x, warmup=-1)
    with pytest.raises(InputError, match="threads"):
        measure(model, x, threads=0)
    with pytest.raises(UnknownNameError) as info:
        measure(model, x, backend="tensorrt")
    assert "'tensorrt'" in str(info.value)
    assert "onnxruntime" in str(info.value) and "torch" in str(info.value)


def test_measure_reports_inputs_the_model_cannot_take() -> None:
    with pytest.raises(ExampleInputsError, match="Linear"):
        measure(nn.Linear(4, 4), torch.randn(1, 5), repeats=1)


# --------------------------------------------------------------------------- memory


class TwoTemps(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x * 2
        return a + 1  # a and the result are alive together


def test_peak_memory_is_exact_for_known_activations() -> None:
    x = torch.randn(10, 10)
    assert measure(TwoTemps(), x, repeats=1).peak_memory_bytes == 2 * 100 * 4
    wide = measure(nn.Linear(64, 256), torch.randn(8, 64), repeats=1).peak_memory_bytes
    narrow = measure(nn.Linear(64, 128), torch.randn(8, 64), repeats=1).peak_memory_bytes
    assert (wide, narrow) == (8 * 256 * 4, 8 * 128 * 4)


# --------------------------------------------------------------------------- sparsity


def test_sparsity_reports_zeroed_half_of_a_weight() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Conv1d(2, 2, 2))
    with torch.no_grad():
        model[0].weight[:2] = 0.0
        model[3].weight.zero_()
    sparsity = weight_sparsity(model)
    assert sparsity == {"0.weight": 0.5, "2.weight": 0.0, "3.weight": 1.0, "*": (8 + 8) / 40}
    half = nn.Linear(4, 2)
    with torch.no_grad():
        half.weight[0] = 0.0
    assert measure(half, torch.randn(1, 4), repeats=1, memory=False).sparsity["weight"] == 0.5


def test_sparsity_reads_masked_weights_of_torch_prune() -> None:
    from torch.nn.utils import prune

    layer = nn.Linear(10, 10)
    nn.init.uniform_(layer.weight, 1.0, 2.0)  # no accidental zeros
    prune.l1_unstructured(layer, "weight", amount=0.3)
    assert weight_sparsity(layer) == {"weight": 0.3, "*": 0.3}
