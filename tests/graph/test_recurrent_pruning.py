"""LSTM, GRU and RNN hidden units are prunable groups: gate rows, recurrent columns, the next
layer's input columns and the consumer of the output go together, and the pruned model
computes what the original does with those units' gate rows set to zero."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.export.onnx import export_onnx, onnx_feeds
from netsculpt.measurement.api import _EXTRA_FLOPS
from netsculpt.testing.models import BiGRUClassifier, LSTMClassifier

GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _ids(batch: int = 2, steps: int = 6) -> torch.Tensor:
    return torch.randint(0, 128, (batch, steps), generator=torch.Generator().manual_seed(1))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _kept(plan: ns.Plan, group: str) -> list[int]:
    return list(next(g for g in plan.groups if g.name == group).kept)


def _zero_hidden_units(rnn: nn.RNNBase, removed: list[int]) -> None:
    """Zero, by hand, the rows of every gate block of the removed hidden units (all layers
    and directions); nothing else. Their state then stays zero, so every reader sees zero."""
    gates, hidden = GATES[type(rnn)], rnn.hidden_size
    rows = torch.tensor([g * hidden + j for g in range(gates) for j in removed], dtype=torch.long)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                p.index_fill_(0, rows, 0.0)


class Seq(nn.Module):
    """Embedding -> recurrent layer -> linear head, on the last step or on ``h_n``."""

    def __init__(
        self,
        cls: type[nn.RNNBase],
        *,
        layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = True,
        read: str = "last",
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, 16)
        self.rnn = cls(
            16, 20, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional
        )
        self.head = nn.Linear(20 * (2 if bidirectional else 1), 3)
        self.batch_first, self.read, self.bidirectional = batch_first, read, bidirectional

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x if self.batch_first else x.transpose(0, 1)
        out, state = self.rnn(x)
        if self.read == "last":
            return self.head(out[:, -1] if self.batch_first else out[-1])
        h_n = state[0] if isinstance(state, tuple) else state
        last = torch.cat([h_n[-2], h_n[-1]], 1) if self.bidirectional else h_n[-1]
        return self.head(last)


def test_lstm_classifier_groups() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    graph = ns.analyze(model, _ids())
    rnn = graph.group("rnn")
    assert rnn.prunable and rnn.size == 48 and rnn.kind == "neurons"
    slots = {(s.tensor, s.dim) for s in rnn.slots}
    for layer in (0, 1):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert (f"rnn.{kind}_l{layer}", 0) in slots  # the rows of the four gate blocks
        assert (f"rnn.weight_hh_l{layer}", 1) in slots  # the recurrent input
    assert ("rnn.weight_ih_l1", 1) in slots and ("head.weight", 1) in slots
    embed = graph.group("embed")  # the embedding width is cut through the LSTM's input
    assert embed.prunable and ("rnn.weight_ih_l0", 1) in {(s.tensor, s.dim) for s in embed.slots}
    assert not graph.skipped


def test_lstm_classifier_prunes_a_quarter_and_equals_zeroed_original() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    ids = _ids()
    plan = ns.plan(model, ids, ratio=0.3)
    small = ns.apply(model, plan)
    assert 1 - _params(small) / _params(model) >= 0.25
    kept_h, kept_e = _kept(plan, "rnn"), _kept(plan, "embed")
    assert len(kept_h) < 48 and len(kept_e) < 32
    assert small.rnn.hidden_size == len(kept_h) and small.rnn.input_size == len(kept_e)
    assert small.rnn.weight_ih_l0.shape == (4 * len(kept_h), len(kept_e))
    assert small.rnn.weight_ih_l1.shape == (4 * len(kept_h), len(kept_h))
    assert small.head.in_features == len(kept_h)
    zeroed = copy.deepcopy(model)
    _zero_hidden_units(zeroed.rnn, sorted(set(range(48)) - set(kept_h)))
    with torch.no_grad():
        removed_e = torch.tensor(sorted(set(range(32)) - set(kept_e)))
        zeroed.embed.weight[:, removed_e] = 0.0
        torch.testing.assert_close(small(ids), zeroed(ids))
        # on other inputs too, longer and with another batch size
        other = torch.randint(0, 128, (5, 11))
        torch.testing.assert_close(small(other), zeroed(other))


@pytest.mark.parametrize(
    ("cls", "layers", "bidirectional", "batch_first", "read"),
    [
        (nn.LSTM, 1, False, False, "last"),
        (nn.LSTM, 2, True, True, "h_n"),
        (nn.LSTM, 2, True, False, "last"),
        (nn.GRU, 2, False, True, "h_n"),
        (nn.GRU, 1, True, False, "last"),
        (nn.RNN, 2, False, True, "last"),
    ],
)
def test_recurrent_variants_prune_exactly(
    cls: type[nn.RNNBase], layers: int, bidirectional: bool, batch_first: bool, read: str
) -> None:
    torch.manual_seed(0)
    model = Seq(
        cls, layers=layers, bidirectional=bidirectional, batch_first=batch_first, read=read
    ).eval()
    ids = _ids()
    plan = ns.plan(model, ids, ratio=0.3)
    small = ns.apply(model, plan)
    kept = _kept(plan, "rnn")
    assert len(kept) == 14  # 30 % of 20 hidden units, the same in every layer and direction
    assert small.rnn.hidden_size == 14
    assert small.head.in_features == 14 * (2 if bidirectional else 1)
    zeroed = copy.deepcopy(model)
    _zero_hidden_units(zeroed.rnn, sorted(set(range(20)) - set(kept)))
    with torch.no_grad():
        zeroed.embed.weight[:, sorted(set(range(16)) - set(_kept(plan, "embed")))] = 0.0
        torch.testing.assert_close(small(ids), zeroed(ids))


def test_bigru_classifier_prunes_through_both_directions() -> None:
    torch.manual_seed(0)
    model = BiGRUClassifier().eval()
    ids = _ids()
    small = ns.prune(model, ids, ratio=0.3)
    hidden = small.rnn.hidden_size
    assert hidden < 24
    assert small.rnn.weight_hh_l0_reverse.shape == (3 * hidden, hidden)
    assert small.head.weight.shape == (4, 2 * hidden)
    assert 1 - _params(small) / _params(model) >= 0.25


def test_save_load_round_trip_and_onnx(tmp_path) -> None:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    ids = _ids()
    small = ns.prune(model, ids, ratio=0.3)
    ns.save(small, tmp_path / "small")
    torch.manual_seed(0)
    again = ns.load(tmp_path / "small", base=LSTMClassifier())
    assert again.rnn.hidden_size == small.rnn.hidden_size
    with torch.no_grad():
        expected = small(ids)
        assert torch.equal(again(ids), expected)
    path = export_onnx(small, ids, tmp_path / "lstm.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, onnx_feeds(ids, names))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_macs_count_recurrent_layers() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    ids = _ids(batch=2, steps=6)
    steps = 2 * 6  # batch x time

    def expected(embed: int, hidden: int) -> int:
        lstm = 4 * hidden * (embed + hidden) + 4 * hidden * (hidden + hidden)
        return steps * lstm + 2 * hidden * 4  # the head on the last step of each sequence

    assert ns.count_macs(model, ids) == expected(32, 48)
    small = ns.prune(model, ids, ratio=0.3)
    assert ns.measure(small, ids, repeats=1, warmup=0, memory=False).macs == expected(
        small.rnn.input_size, small.rnn.hidden_size
    )
    gru = nn.GRU(16, 12, num_layers=2, bidirectional=True).eval()
    x = torch.randn(7, 2, 16)
    gru_macs = 7 * 2 * 2 * (3 * 12 * (16 + 12) + 3 * 12 * (24 + 12))
    assert ns.count_macs(gru, x) == gru_macs
    # the same stack as one cuDNN call (GPU): the formula over its input and weight shapes
    fused = _EXTRA_FLOPS[torch.ops.aten._cudnn_rnn]
    shapes = [tuple(p.shape) for p in gru._flat_weights if p is not None]
    assert fused(tuple(x.shape), shapes) == 2 * gru_macs


def test_projected_lstm_is_protected_with_its_reason() -> None:
    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(128, 16)
            self.rnn = nn.LSTM(16, 20, batch_first=True, proj_size=8)
            self.fc = nn.Linear(8, 12)
            self.head = nn.Linear(12, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embed(ids))
            return self.head(torch.relu(self.fc(out[:, -1])))

    torch.manual_seed(0)
    model = Projected().eval()
    graph = ns.analyze(model, _ids())
    (skipped,) = graph.skipped
    assert skipped.module == "rnn" and "proj_size=8" in skipped.reason
    assert not graph.group("embed").prunable and "proj_size" in graph.group("embed").reason
    small = ns.prune(model, _ids(), ratio=0.3)  # the rest still prunes
    assert small.fc.out_features < 12 and small.rnn.weight_ih_l0.shape == (80, 16)


def test_initial_state_from_the_caller_keeps_the_width() -> None:
    class WithState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(8, 10, batch_first=True)
            self.head = nn.Linear(10, 2)

        def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x, h0)
            return self.head(out[:, -1])

    graph = ns.analyze(WithState().eval(), (torch.randn(2, 5, 8), torch.randn(1, 2, 10)))
    rnn = graph.group("rnn")
    assert not rnn.prunable and "model input" in rnn.reason


def test_unbatched_input_and_bias_free_stacks() -> None:
    class Unbatched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.rnn = nn.LSTM(16, 20)
            self.head = nn.Linear(20, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, (h_n, c_n) = self.rnn(torch.relu(self.fc(x)))
            return self.head(out[-1] + h_n[-1] + c_n[-1])

    class BiasFree(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.rnn = nn.GRU(8, 20, num_layers=3, bias=False)
            self.head = nn.Linear(20, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(self.fc(x))[0][-1])

    torch.manual_seed(0)
    for model, x in ((Unbatched(), torch.randn(5, 8)), (BiasFree(), torch.randn(5, 2, 8))):
        small = ns.prune(model.eval(), x, ratio=0.3)  # verified against the zeroed original
        assert small.rnn.hidden_size == 14
        assert small(x).shape == model(x).shape


def test_literal_initial_state_keeps_the_group_whole() -> None:
    class Literal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.rnn = nn.GRU(8, 20, batch_first=True)
            self.head = nn.Linear(20, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h0 = torch.zeros(1, x.shape[0], 20)  # a size the plan cannot change
            return self.head(self.rnn(self.fc(x), h0)[0][:, -1])

    torch.manual_seed(0)
    model, x = Literal().eval(), torch.randn(2, 5, 8)
    plan = ns.plan(model, x, ratio=0.3)
    assert plan.meta["kept_whole"] == ["rnn"]
    small = ns.apply(model, plan)
    assert small.rnn.hidden_size == 20 and small.fc.out_features < 8
