"""A zoo of small models for testing and benchmarking netsculpt on real architectures.

Every entry of :data:`ZOO` is a factory ``() -> (model, example_inputs)``: it seeds torch,
builds a small model in eval mode with random weights (no downloads) and returns inputs in
the form the model is called with (a tensor, a tuple, or a dict of keyword inputs). Each
factory is also a module-level function, so the command line can name it as
``netsculpt.testing.zoo:hf_llama_gqa``.

>>> from netsculpt.testing.zoo import ZOO, HELD_OUT
>>> model, example_inputs = ZOO["resnet_basic"]()
>>> len(HELD_OUT)
18

The transformers entries are built from tiny configs (hidden 64, 4 heads, 2 layers, ...)
with the attention implementation named in :data:`ATTN_IMPLEMENTATION`.
:data:`HELD_OUT` names 18 transformers architectures (BERT-, GPT-2-, Llama-family with
GQA, ViT-, Swin-, ResNet-, ConvNeXt-, MobileNet-style) used to report coverage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from netsculpt._inputs import ExampleInputs
from netsculpt.errors import UnknownNameError
from netsculpt.testing import _blocks as B
from netsculpt.testing.models import BiGRUClassifier, LSTMClassifier

Factory = Callable[[], tuple[nn.Module, ExampleInputs]]

ZOO: dict[str, Factory] = {}
"""Zoo name -> factory returning ``(model, example_inputs)``."""

ATTN_IMPLEMENTATION: dict[str, str] = {}
"""Zoo name -> the ``attn_implementation`` its transformers config was built with."""

SEED = 0
BATCH = 2
SEQ = 8
IMAGE = 32
VOCAB = 128


def _register(fn: Factory) -> Factory:
    ZOO[fn.__name__] = fn
    return fn


def build(name: str) -> tuple[nn.Module, ExampleInputs]:
    """Build the zoo entry ``name``; an unknown name raises :class:`UnknownNameError`."""
    factory = ZOO.get(name)
    if factory is None:
        raise UnknownNameError(
            f"no zoo model named {name!r}; choose one of {', '.join(sorted(ZOO))}"
        )
    return factory()


def token_batches(inputs: Mapping[str, Any], n: int = 4, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` calibration batches for a zoo transformers model: its inputs with other token
    ids (3 to ``VOCAB - 1``, seeded), the attention mask kept."""
    g = torch.Generator().manual_seed(seed)
    shape = inputs["input_ids"].shape
    return [{**inputs, "input_ids": torch.randint(3, VOCAB, shape, generator=g)} for _ in range(n)]


def _image(channels: int = 3, size: int = IMAGE) -> torch.Tensor:
    return torch.randn(BATCH, channels, size, size)


def _hand(model_cls: Callable[[], nn.Module], inputs: Callable[[], Any]) -> tuple[nn.Module, Any]:
    torch.manual_seed(SEED)
    model = B.randomise_norms(model_cls()).eval()
    return model, inputs()


# --- hand-written models ---------------------------------------------------------------


@_register
def mlp() -> tuple[nn.Module, ExampleInputs]:
    """Three linear layers with ReLU on a (2, 16) input."""
    return _hand(B.MLP, lambda: torch.randn(BATCH, 16))


@_register
def mlp_residual() -> tuple[nn.Module, ExampleInputs]:
    """Pre-norm residual MLP blocks sharing one width, on a (2, 16) input."""
    return _hand(B.ResidualMLP, lambda: torch.randn(BATCH, 16))


@_register
def cnn_bn() -> tuple[nn.Module, ExampleInputs]:
    """Plain conv-BN-ReLU network with a pooled head."""
    return _hand(B.PlainCNN, _image)


@_register
def cnn_flatten() -> tuple[nn.Module, ExampleInputs]:
    """VGG-style network whose 4x4 feature map is flattened into a linear layer."""
    return _hand(B.FlattenCNN, lambda: _image(size=16))


@_register
def resnet_basic() -> tuple[nn.Module, ExampleInputs]:
    """ResNet basic blocks, identity and projection shortcuts."""
    return _hand(B.ResNetBasic, _image)


@_register
def resnet_bottleneck() -> tuple[nn.Module, ExampleInputs]:
    """ResNet bottleneck blocks with projection shortcuts."""
    return _hand(B.ResNetBottleneck, _image)


@_register
def resnext() -> tuple[nn.Module, ExampleInputs]:
    """ResNeXt: bottlenecks whose 3x3 convolution has 4 groups."""
    return _hand(lambda: B.ResNetBottleneck(groups=4, width=16), _image)


@_register
def densenet() -> tuple[nn.Module, ExampleInputs]:
    """DenseNet layers that concatenate their output onto their input."""
    return _hand(B.DenseNet, _image)


@_register
def inception() -> tuple[nn.Module, ExampleInputs]:
    """Inception blocks: four branches concatenated on channels."""
    return _hand(B.Inception, _image)


@_register
def mobilenet_v1() -> tuple[nn.Module, ExampleInputs]:
    """Depthwise-separable convolutions (MobileNetV1)."""
    return _hand(B.MobileNetV1, _image)


@_register
def mobilenet_v2() -> tuple[nn.Module, ExampleInputs]:
    """Inverted residuals with expansion and depthwise convolutions (MobileNetV2)."""
    return _hand(B.MobileNetV2, _image)


@_register
def shufflenet_v2() -> tuple[nn.Module, ExampleInputs]:
    """ShuffleNetV2 units: channel split, concat and channel shuffle."""
    return _hand(B.ShuffleNetV2, _image)


@_register
def squeeze_excite() -> tuple[nn.Module, ExampleInputs]:
    """Residual blocks with squeeze-excitation gates."""
    return _hand(B.SENet, _image)


@_register
def transformer_block() -> tuple[nn.Module, ExampleInputs]:
    """Hand-written transformer encoder: q/k/v Linear, view to heads, SDPA."""
    return _hand(B.TinyTransformer, lambda: torch.randint(0, 100, (BATCH, SEQ)))


@_register
def moe_transformer() -> tuple[nn.Module, ExampleInputs]:
    """Hand-written MoE: top-2 experts in an nn.ModuleList, dispatched with torch.where and
    index_add (a data-dependent number of tokens per expert)."""
    return _hand(B.MoETransformer, lambda: torch.randint(0, 100, (BATCH, SEQ)))


@_register
def tied_lm() -> tuple[nn.Module, ExampleInputs]:
    """Language model whose LM head shares the embedding weight."""
    return _hand(B.TiedLM, lambda: torch.randint(0, 128, (BATCH, SEQ)))


@_register
def conv1d() -> tuple[nn.Module, ExampleInputs]:
    """1D convolutions over a (2, 4, 64) signal, with a residual block."""
    return _hand(B.Conv1dNet, lambda: torch.randn(BATCH, 4, 64))


@_register
def text_cnn() -> tuple[nn.Module, ExampleInputs]:
    """Embedding, parallel 1D convolutions, max over time, concat, classifier."""
    return _hand(B.TextCNN, lambda: torch.randint(0, 200, (BATCH, 16)))


@_register
def unet() -> tuple[nn.Module, ExampleInputs]:
    """U-Net encoder-decoder with skip concatenations and ConvTranspose2d upsampling."""
    return _hand(B.UNet, lambda: _image(size=16))


@_register
def two_tower() -> tuple[nn.Module, ExampleInputs]:
    """Two positional inputs fused by concat, two outputs returned as a tuple."""
    return _hand(B.TwoTower, lambda: (_image(size=8), torch.randn(BATCH, 8)))


@_register
def lstm_classifier() -> tuple[nn.Module, ExampleInputs]:
    """Embedding, a 2-layer LSTM (batch first), a linear head on the last step."""
    return _hand(LSTMClassifier, lambda: torch.randint(0, VOCAB, (BATCH, SEQ)))


@_register
def bigru_classifier() -> tuple[nn.Module, ExampleInputs]:
    """Embedding, a bidirectional GRU (time first), a linear head on both final states."""
    return _hand(BiGRUClassifier, lambda: torch.randint(0, VOCAB, (BATCH, SEQ)))


# --- transformers models from tiny configs ----------------------------------------------


def _text_inputs(*, decoder: bool) -> dict[str, Any]:
    ids = torch.randint(3, VOCAB, (BATCH, SEQ))
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, -2:] = 0  # one padded row exercises the attention mask
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if decoder:
        inputs["use_cache"] = False
    return inputs


def _hf(
    name: str, model_cls: str, config_cls: str, config: dict[str, Any], *, attn: str | None
) -> Factory:
    """Make and register a factory building ``transformers.<model_cls>`` from a tiny config."""
    kind = "vision" if "pixel_values" in config.pop("_inputs", "") else "text"
    decoder = model_cls.endswith(("ForCausalLM", "LMHeadModel"))

    def factory() -> tuple[nn.Module, ExampleInputs]:
        import transformers

        torch.manual_seed(SEED)
        extra = {"attn_implementation": attn} if attn else {}
        cfg = getattr(transformers, config_cls)(**config, **extra)
        model = getattr(transformers, model_cls)(cfg).eval()
        if kind == "vision":
            return model, {"pixel_values": _image(cfg.num_channels, IMAGE)}
        return model, _text_inputs(decoder=decoder)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"transformers {model_cls} from a tiny {config_cls} (random weights)."
    if attn:
        ATTN_IMPLEMENTATION[name] = attn
    globals()[name] = factory
    return _register(factory)


_ENC = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
    num_labels=3,
)
_DEC = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
)
_GQA = dict(_DEC, num_key_value_heads=2)
_VIT = dict(
    image_size=IMAGE,
    patch_size=8,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    num_labels=10,
    _inputs="pixel_values",
)
_CNN = dict(num_labels=10, image_size=IMAGE, _inputs="pixel_values")

# encoders
_hf("hf_bert", "BertForSequenceClassification", "BertConfig", dict(_ENC), attn="sdpa")
_hf(
    "hf_roberta",
    "RobertaForSequenceClassification",
    "RobertaConfig",
    dict(_ENC, pad_token_id=1),
    attn="sdpa",
)
_hf(
    "hf_distilbert",
    "DistilBertForSequenceClassification",
    "DistilBertConfig",
    dict(
        vocab_size=VOCAB,
        dim=64,
        n_layers=2,
        n_heads=4,
        hidden_dim=128,
        max_position_embeddings=64,
        num_labels=3,
    ),
    attn="sdpa",
)
_hf(
    "hf_albert",
    "AlbertForSequenceClassification",
    "AlbertConfig",
    dict(_ENC, embedding_size=32),
    attn="sdpa",
)
_hf(
    "hf_electra",
    "ElectraForSequenceClassification",
    "ElectraConfig",
    dict(_ENC, embedding_size=32),
    attn="sdpa",
)
_hf(
    "hf_t5_encoder",
    "T5EncoderModel",
    "T5Config",
    dict(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    attn=None,
)

# decoders
_hf(
    "hf_gpt2",
    "GPT2LMHeadModel",
    "GPT2Config",
    dict(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=128,
        bos_token_id=1,
        eos_token_id=2,
    ),
    attn="sdpa",
)
_hf("hf_gpt_neox", "GPTNeoXForCausalLM", "GPTNeoXConfig", dict(_DEC, rotary_pct=0.5), attn="sdpa")
_hf(
    "hf_opt",
    "OPTForCausalLM",
    "OPTConfig",
    dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=64,
    ),
    attn="sdpa",
)
_hf("hf_llama_gqa", "LlamaForCausalLM", "LlamaConfig", dict(_GQA), attn="sdpa")
_hf(
    "hf_mistral_gqa",
    "MistralForCausalLM",
    "MistralConfig",
    dict(_GQA, sliding_window=None),
    attn="sdpa",
)
_hf("hf_qwen2_gqa", "Qwen2ForCausalLM", "Qwen2Config", dict(_GQA), attn="sdpa")
_hf("hf_qwen3_gqa", "Qwen3ForCausalLM", "Qwen3Config", dict(_GQA, head_dim=16), attn="sdpa")
# mixture of experts: 4 experts, top-2 routing, experts stored as stacked 3-D weights
_MOE = dict(_GQA, num_experts_per_tok=2)
_hf(
    "hf_mixtral",
    "MixtralForCausalLM",
    "MixtralConfig",
    dict(_MOE, num_local_experts=4, sliding_window=None),
    attn="sdpa",
)
_hf(
    "hf_qwen2_moe",
    "Qwen2MoeForCausalLM",
    "Qwen2MoeConfig",
    dict(_MOE, num_experts=4, moe_intermediate_size=64, shared_expert_intermediate_size=128),
    attn="sdpa",
)
_hf(
    "hf_gemma",
    "GemmaForCausalLM",
    "GemmaConfig",
    dict(_DEC, num_key_value_heads=1, head_dim=16),
    attn="sdpa",
)
_hf("hf_phi", "PhiForCausalLM", "PhiConfig", dict(_DEC, partial_rotary_factor=0.5), attn="sdpa")
_hf(
    "hf_falcon",
    "FalconForCausalLM",
    "FalconConfig",
    dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
    attn="sdpa",
)

# vision transformers
_hf("hf_vit", "ViTForImageClassification", "ViTConfig", dict(_VIT), attn="sdpa")
_hf("hf_deit", "DeiTForImageClassification", "DeiTConfig", dict(_VIT), attn="sdpa")
_hf(
    "hf_beit",
    "BeitForImageClassification",
    "BeitConfig",
    dict(_VIT, use_relative_position_bias=True),
    attn="eager",
)
_hf(
    "hf_dinov2",
    "Dinov2ForImageClassification",
    "Dinov2Config",
    dict(_VIT, mlp_ratio=2),
    attn="sdpa",
)
_hf(
    "hf_swin",
    "SwinForImageClassification",
    "SwinConfig",
    dict(
        image_size=IMAGE,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 4],
        window_size=4,
        mlp_ratio=2.0,
        num_labels=10,
        _inputs="pixel_values",
    ),
    attn=None,
)
_hf(
    "hf_segformer",
    "SegformerForSemanticSegmentation",
    "SegformerConfig",
    dict(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=3,
        _inputs="pixel_values",
    ),
    attn=None,
)

# convnets
_hf(
    "hf_resnet",
    "ResNetForImageClassification",
    "ResNetConfig",
    dict(
        embedding_size=16,
        hidden_sizes=[32, 64, 96, 128],
        depths=[1, 1, 1, 1],
        layer_type="bottleneck",
        num_labels=10,
        _inputs="pixel_values",
    ),
    attn=None,
)
_hf(
    "hf_convnext",
    "ConvNextForImageClassification",
    "ConvNextConfig",
    dict(hidden_sizes=[16, 32, 64, 96], depths=[1, 1, 1, 1], num_labels=10, _inputs="pixel_values"),
    attn=None,
)
_hf(
    "hf_convnextv2",
    "ConvNextV2ForImageClassification",
    "ConvNextV2Config",
    dict(hidden_sizes=[16, 32, 64, 96], depths=[1, 1, 1, 1], num_labels=10, _inputs="pixel_values"),
    attn=None,
)
_hf(
    "hf_mobilenet_v2",
    "MobileNetV2ForImageClassification",
    "MobileNetV2Config",
    dict(_CNN, depth_multiplier=0.35),
    attn=None,
)
_hf(
    "hf_mobilenet_v1",
    "MobileNetV1ForImageClassification",
    "MobileNetV1Config",
    dict(_CNN, depth_multiplier=0.25),
    attn=None,
)
_hf(
    "hf_regnet",
    "RegNetForImageClassification",
    "RegNetConfig",
    dict(
        embedding_size=16,
        hidden_sizes=[16, 32, 48, 64],
        depths=[1, 1, 1, 1],
        groups_width=8,
        layer_type="y",
        num_labels=10,
        _inputs="pixel_values",
    ),
    attn=None,
)


HELD_OUT: list[str] = [
    "hf_bert", "hf_roberta", "hf_distilbert", "hf_electra",
    "hf_gpt2", "hf_gpt_neox", "hf_opt",
    "hf_llama_gqa", "hf_mistral_gqa", "hf_qwen2_gqa", "hf_gemma", "hf_phi",
    "hf_vit", "hf_deit", "hf_swin",
    "hf_resnet", "hf_convnext", "hf_mobilenet_v2",
]  # fmt: skip
"""18 transformers architectures on which coverage (capture, prune, run) is reported."""

MOE: list[str] = ["hf_mixtral", "hf_qwen2_moe"]
"""The mixture-of-experts entries (Mixtral- and Qwen2-MoE-style sparse blocks)."""

HAND_WRITTEN: list[str] = [name for name in ZOO if not name.startswith("hf_")]
"""The hand-written entries of :data:`ZOO`."""
