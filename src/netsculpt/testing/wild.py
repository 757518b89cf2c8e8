"""transformers architectures outside the zoo, built the way a new user builds them.

Every entry of :data:`WILD` is a factory ``() -> (model, example_inputs)`` for one
``transformers`` model type: ``AutoConfig.for_model(model_type, ...)`` with tiny sizes
(only the size fields that config has) and everything else at its default, then
``AutoModel.from_config``, in eval mode, seeded. Unlike :mod:`netsculpt.testing.zoo`, nothing
is tuned for netsculpt: decoders keep ``use_cache=True``, inputs are ``input_ids`` and an
``attention_mask`` (or ``pixel_values``) and nothing else. ``bench/zoo.py --models wild``
reports coverage on them.

>>> from netsculpt.testing.wild import WILD
>>> model, inputs = WILD["gptj"]()
>>> sorted(inputs)
['attention_mask', 'input_ids']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from netsculpt._inputs import ExampleInputs

__all__ = ["TEXT", "VISION", "WILD", "tiny_config"]

Factory = Callable[[], tuple[nn.Module, ExampleInputs]]

#: text model types (decoders, encoders, encoder-decoders): ``input_ids`` + mask
TEXT: tuple[str, ...] = (
    "gptj",
    "codegen",
    "bloom",
    "mpt",
    "stablelm",
    "phi3",
    "gemma2",
    "olmo",
    "olmo2",
    "cohere",
    "gpt_bigcode",
    "starcoder2",
    "granite",
    "qwen3_moe",
    "olmoe",
    "smollm3",
    "glm",
    "persimmon",
    "nemotron",
    "helium",
    "xlm-roberta",
    "deberta-v2",
    "mobilebert",
    "ernie",
    "megatron-bert",
    "nystromformer",
    "bart",
    "mbart",
)
#: vision model types: ``pixel_values`` of 2 x 3 x 32 x 32
VISION: tuple[str, ...] = (
    "mobilevit",
    "poolformer",
    "efficientnet",
    "vit_msn",
    "dinov2_with_registers",
)

# tiny sizes under every name transformers configs use for them; a config takes the ones
# its __init__ names and keeps its defaults for everything else
_TINY: dict[str, Any] = {
    "hidden_size": 32,
    "d_model": 32,
    "n_embd": 32,
    "embed_dim": 32,
    "num_attention_heads": 4,
    "n_head": 4,
    "num_heads": 4,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "num_hidden_layers": 2,
    "n_layer": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "intermediate_size": 64,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 128,
    "pad_token_id": 0,
    "max_position_embeddings": 64,
    "n_positions": 64,
    "rotary_dim": 4,
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
}
SEED = 0


def tiny_config(model_type: str) -> Any:
    """``AutoConfig.for_model(model_type)`` with the tiny sizes its ``__init__`` accepts."""
    import transformers

    config_cls = type(transformers.AutoConfig.for_model(model_type))
    accepted = inspect.signature(config_cls.__init__).parameters
    return config_cls(**{k: v for k, v in _TINY.items() if k in accepted})


def _factory(model_type: str, *, vision: bool) -> Factory:
    def factory() -> tuple[nn.Module, ExampleInputs]:
        import transformers

        torch.manual_seed(SEED)
        model = transformers.AutoModel.from_config(tiny_config(model_type)).eval()
        if vision:
            return model, {"pixel_values": torch.randn(2, 3, 32, 32)}
        ids = torch.randint(3, 100, (2, 16))
        return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    factory.__name__ = factory.__qualname__ = model_type.replace("-", "_")
    factory.__doc__ = f"transformers AutoModel for {model_type!r} from a tiny default config."
    return factory


WILD: dict[str, Factory] = {
    **{t: _factory(t, vision=False) for t in TEXT},
    **{t: _factory(t, vision=True) for t in VISION},
}
"""transformers model type -> factory returning ``(model, example_inputs)``."""
