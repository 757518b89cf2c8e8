"""Attention groups of an encoder-decoder (T5): labels, cross-attention heads, tied names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netsculpt as ns

transformers = pytest.importorskip("transformers")


def _t5() -> tuple[nn.Module, dict[str, object]]:
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=128,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    ids = torch.randint(0, 128, (2, 8))
    return model, {"input_ids": ids, "decoder_input_ids": ids[:, :5], "use_cache": False}


@pytest.fixture(scope="module")
def t5() -> tuple[nn.Module, dict[str, object], ns.Graph]:
    model, inputs = _t5()
    return model, inputs, ns.analyze(model, inputs)


def test_t5_attention_is_not_labelled_grouped_query(t5) -> None:
    _, _, graph = t5
    heads = [g for g in graph.groups if g.kind == "heads"]
    assert heads
    for g in heads:
        # one column per head in the relative position table must not read as 16 query
        # heads per key/value head: T5 has as many key/value heads as query heads
        assert "grouped-query" not in g.note, (g.name, g.note)
        assert g.unit_width == 16, (g.name, g.unit_width)


def test_t5_cross_attention_heads_are_a_prunable_group(t5) -> None:
    _, _, graph = t5
    cross = graph.group("decoder.block.0.layer.1.EncDecAttention")
    assert cross.kind == "heads" and cross.size == 4 and cross.prunable, cross
    assert "decoder.block.0.layer.1.EncDecAttention.k.weight" in cross.params
    # the zero position bias of the first cross-attention is reused by the second
    assert "decoder.block.1.layer.1.EncDecAttention.q.weight" in cross.params


def test_t5_hidden_stream_reason_names_the_norm_not_a_tied_name(t5) -> None:
    _, _, graph = t5
    stream = [g for g in graph.groups if "shared.weight" in g.params and g.size == 64]
    assert len(stream) == 1
    assert not stream[0].prunable
    assert "not read" not in stream[0].reason
    assert "layer_norm" in stream[0].reason


def test_t5_cross_attention_heads_prune_exactly(t5) -> None:
    model, inputs, graph = t5
    plan = ns.plan(
        model,
        inputs,
        ns.PruneConfig(ratio={"decoder.block.0.layer.1.EncDecAttention": 0.5}),
        graph=graph,
    )
    assert "kept_whole" not in plan.meta
    small = ns.apply(model, plan)
    attn = small.decoder.block[0].layer[1].EncDecAttention
    assert attn.n_heads == 2 and attn.q.out_features == 32 and attn.o.in_features == 32
    out = small(**inputs).logits
    assert out.shape == (2, 5, 128)
    # the verifier proved it equal to the original with the removed heads zeroed; check the
    # same here: zero the removed heads' value rows and compare with the original
    ref = _t5()[0]
    keep = plan.tensors["decoder.block.0.layer.1.EncDecAttention.v.weight"][0]
    mask = torch.zeros(64, dtype=torch.bool)
    mask[torch.as_tensor(keep)] = True
    with torch.no_grad():
        for block in ref.decoder.block:
            block.layer[1].EncDecAttention.v.weight[~mask] = 0
    torch.testing.assert_close(out, ref(**inputs).logits, rtol=1e-4, atol=1e-5)


class TiedUnread(nn.Module):
    """Two names of one weight (the second never read) and one truly unused weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight
        self.unused = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return torch.relu(self.fc(h)) @ self.embed.weight.T


def test_unread_names_are_protected_only_when_no_name_of_the_tensor_is_read() -> None:
    graph = ns.analyze(TiedUnread(), torch.randint(0, 10, (2, 5)))
    assert graph.group("fc").prunable
    unused = [g for g in graph.groups if "unused.weight" in g.params]
    assert unused and all(not g.prunable for g in unused)
    assert all("not read" in g.reason for g in unused)
