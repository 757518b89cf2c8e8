"""A transformers decoder with its default config returns its key/value cache; netsculpt
captures it without the cache and prunes it like any model."""

from __future__ import annotations

import pytest
import torch

import netsculpt as ns
from netsculpt._inputs import without_cache

transformers = pytest.importorskip("transformers")


def _llama() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=64,
        vocab_size=128,
    )
    assert config.use_cache  # the default a user gets
    inputs = {"input_ids": torch.randint(3, 100, (2, 12)), "attention_mask": torch.ones(2, 12)}
    return transformers.LlamaForCausalLM(config).eval(), inputs


def test_a_decoder_returning_its_cache_prunes_and_keeps_the_cache_working() -> None:
    model, inputs = _llama()
    graph = ns.analyze(model, inputs)
    heads = [g for g in graph.groups if g.kind == "heads"]
    assert len(heads) == 2 and all(g.prunable for g in heads)  # not protected as outputs
    small = ns.prune(model, inputs, ratio=0.5)
    with torch.no_grad():
        out = small(**inputs)
        want = model(**inputs, use_cache=False).logits
    assert out.logits.shape == want.shape
    # the pruned model still returns a cache, of its own (fewer) key/value heads
    assert out.past_key_values is not None
    kept_kv = small.model.layers[0].self_attn.k_proj.out_features
    assert kept_kv < 16


def test_without_cache_adds_use_cache_only_where_it_applies() -> None:
    model, inputs = _llama()
    assert without_cache(model, {"input_ids": inputs["input_ids"]})["use_cache"] is False
    assert without_cache(model, {"use_cache": True}) == {"use_cache": True}  # the caller's
    assert without_cache(torch.nn.Linear(2, 2), {}) == {}
    model.config.use_cache = False
    assert without_cache(model, {}) == {}
