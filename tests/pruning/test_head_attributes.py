"""A pruned BERT-style attention describes itself truthfully: heads follow its query width."""

from __future__ import annotations

import pytest
import torch

import netsculpt as ns
from netsculpt.testing.zoo import ZOO

pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["hf_bert", "hf_roberta"])
def test_head_count_and_width_follow_the_pruned_query(name: str, tmp_path) -> None:
    model, inputs = ZOO[name]()
    small = ns.prune(model, inputs, ns.PruneConfig(ratio=0.5))
    attentions = [m for m in small.modules() if "attention_head_size" in vars(m)]
    assert attentions
    for attention in attentions:
        width = attention.query.weight.shape[0]
        assert width < 64  # heads were removed
        assert attention.num_attention_heads == width // attention.attention_head_size
        assert attention.all_head_size == width
    ns.save(small, tmp_path / "small")
    back = ns.load(tmp_path / "small")
    reloaded = [m for m in back.modules() if "attention_head_size" in vars(m)]
    for a, b in zip(attentions, reloaded, strict=True):
        assert (a.num_attention_heads, a.all_head_size) == (b.num_attention_heads, b.all_head_size)
    with torch.no_grad():
        torch.testing.assert_close(back(**inputs).logits, small(**inputs).logits)
