"""The zoo factories build, run, are deterministic, and are captured by torch.export quickly."""

from __future__ import annotations

import time

import pytest
import torch

from netsculpt._inputs import call_model, flatten_outputs, split_inputs
from netsculpt.errors import UnknownNameError
from netsculpt.testing.zoo import ATTN_IMPLEMENTATION, HAND_WRITTEN, HELD_OUT, ZOO, build

EXPORT_SECONDS = 5.0


def test_zoo_size_and_held_out_set() -> None:
    assert len(ZOO) >= 30
    assert len(HAND_WRITTEN) >= 15
    assert len(HELD_OUT) == 18
    assert len(set(HELD_OUT)) == 18
    assert set(HELD_OUT) <= set(ZOO)
    assert all(name.startswith("hf_") for name in HELD_OUT)


def test_unknown_name_says_what_exists() -> None:
    with pytest.raises(UnknownNameError, match=r"'nope'.*hf_bert"):
        build("nope")


def test_factories_are_module_functions_for_the_cli() -> None:
    from netsculpt.testing import zoo

    for name, factory in ZOO.items():
        assert getattr(zoo, name) is factory
        assert factory.__doc__


@pytest.mark.parametrize("name", list(ZOO))
def test_factory_builds_runs_and_exports(name: str) -> None:
    model, example_inputs = ZOO[name]()
    assert not model.training
    assert all(not m.training for m in model.modules())
    with torch.no_grad():
        outputs = flatten_outputs(call_model(model, example_inputs))
    assert outputs, f"{name} returned no tensors"
    assert all(torch.isfinite(o).all() for o in outputs if o.is_floating_point())

    args, kwargs = split_inputs(example_inputs)
    # CPU time of this one-threaded process: the bound holds on a busy machine too
    start = time.process_time()
    exported = torch.export.export(model, args, kwargs, strict=False)
    seconds = time.process_time() - start
    assert seconds < EXPORT_SECONDS, f"{name}: torch.export took {seconds:.2f} s of CPU time"

    with torch.no_grad():
        replayed = flatten_outputs(exported.module()(*args, **kwargs))
    assert [o.shape for o in replayed] == [o.shape for o in outputs]
    for got, want in zip(replayed, outputs, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["resnet_basic", "tied_lm", "two_tower", "hf_llama_gqa", "hf_vit"])
def test_factories_are_deterministic(name: str) -> None:
    model_a, inputs_a = ZOO[name]()
    torch.manual_seed(123)  # the factory must not depend on the caller's RNG state
    model_b, inputs_b = ZOO[name]()
    for (key_a, a), (key_b, b) in zip(
        model_a.state_dict().items(), model_b.state_dict().items(), strict=True
    ):
        assert key_a == key_b
        torch.testing.assert_close(a, b)
    flat_a, _ = torch.utils._pytree.tree_flatten(inputs_a)
    flat_b, _ = torch.utils._pytree.tree_flatten(inputs_b)
    for a, b in zip(flat_a, flat_b, strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b)
        else:
            assert a == b


def test_transformers_entries_use_the_recorded_attention() -> None:
    assert {"hf_bert", "hf_llama_gqa", "hf_beit"} <= set(ATTN_IMPLEMENTATION)
    for name, attn in ATTN_IMPLEMENTATION.items():
        model, _ = ZOO[name]()
        assert model.config._attn_implementation == attn


@pytest.mark.parametrize("name", ["hf_llama_gqa", "hf_mistral_gqa", "hf_qwen2_gqa", "hf_qwen3_gqa"])
def test_decoders_use_grouped_query_attention(name: str) -> None:
    model, inputs = ZOO[name]()
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert inputs["use_cache"] is False


def test_tied_weights_are_shared() -> None:
    model, _ = ZOO["tied_lm"]()
    assert model.lm_head.weight is model.embed.weight
    gpt2, _ = ZOO["hf_gpt2"]()
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
