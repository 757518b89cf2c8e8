"""Residual-width pruning: embeddings, projection widths and the norms over them shrink,
and the pruned model still equals the original with the removed channels zeroed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import InputError, PlanError, UnsupportedOperationError
from netsculpt.pruning._residual import WidthLayerNorm, residual_groups
from netsculpt.pruning.plan import Plan
from netsculpt.testing.zoo import build

RESIDUAL = ns.PruneConfig(ratio=0.3, residual=True)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, inputs: object) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if isinstance(out, torch.Tensor):
        return [out]
    return [v for v in out.values() if isinstance(v, torch.Tensor)]


def _zeroed(model: nn.Module, plan: Plan) -> nn.Module:
    """A copy of the original model with every position the plan removes set to zero."""
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, dims in plan.tensors.items():
            t = params.get(name)
            if t is None:  # a buffer (running statistics) follows its channels unzeroed
                continue
            for dim, kept in dims.items():
                gone = sorted(set(range(t.shape[dim])) - set(kept))
                t.index_fill_(dim, torch.tensor(gone, dtype=torch.long), 0.0)
    return ref


def _assert_exact(model: nn.Module, small: nn.Module, inputs: object) -> None:
    reference = _zeroed(model, ns.plan_of(small))
    for a, b in zip(_outputs(small, inputs), _outputs(reference, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class HandRms(nn.Module):
    """An RMS norm written out as the transformers Llama norm is."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(width) + 0.5)
        self.variance_epsilon = 1e-2  # large, so a wrong epsilon shows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


class PreNormBlocks(nn.Module):
    """Embedding, two pre-norm residual MLP blocks (hand-written and torch RMS norms, or
    layer norms), a final norm and a head."""

    def __init__(self, width: int = 32, vocab: int = 50, layer_norm: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm1 = HandRms(width)
        self.up1 = nn.Linear(width, 64)
        self.down1 = nn.Linear(64, width)
        self.norm2: nn.Module = (
            nn.LayerNorm(width, eps=1e-2) if layer_norm else nn.RMSNorm(width, eps=1e-2)
        )
        self.up2 = nn.Linear(width, 64)
        self.down2 = nn.Linear(64, width)
        # eps=None: the dtype's machine epsilon
        self.final: nn.Module = nn.LayerNorm(width) if layer_norm else nn.RMSNorm(width)
        with torch.no_grad():
            self.final.weight.uniform_(0.5, 1.5)
            self.norm2.weight.uniform_(0.5, 1.5)
        self.head = nn.Linear(width, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x + self.down1(torch.relu(self.up1(self.norm1(x))))
        x = x + self.down2(torch.relu(self.up2(self.norm2(x))))
        return self.head(self.final(x))


def test_rms_norms_resized_exactly_on_a_hand_written_block() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    small = ns.prune(model, ids, RESIDUAL)
    assert small.embed.weight.shape == (50, 23)  # 32 - floor(0.3 * 32)
    assert small.head.weight.shape == (10, 23) and small.up2.weight.shape[1] == 23
    # the norms keep their classes, with epsilon times D/d and the weight times sqrt(D/d)
    assert isinstance(small.norm1, HandRms) and isinstance(small.norm2, nn.RMSNorm)
    assert small.norm1.variance_epsilon == pytest.approx(1e-2 * 32 / 23)
    assert small.norm2.eps == pytest.approx(1e-2 * 32 / 23)
    assert small.final.eps == pytest.approx(torch.finfo(torch.float32).eps * 32 / 23)
    kept = ns.plan_of(small).tensors["norm1.weight"][0]
    torch.testing.assert_close(
        small.norm1.weight, model.norm1.weight[list(kept)] * (32 / 23) ** 0.5
    )
    assert model.norm1.variance_epsilon == 1e-2  # the original is untouched
    _assert_exact(model, small, ids)
    assert ns.plan_of(small).norms == (
        ("norm1", 32, 23),
        ("norm2", 32, 23),
        ("final", 32, 23),
    )


def test_residual_is_off_by_default_and_recorded_in_the_plan() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    plan = ns.plan(model, ids, ratio=0.3)
    assert "embed.weight" not in plan.tensors and plan.norms == ()
    assert plan.meta["config"]["residual"] is False
    graph = ns.analyze(model, ids)
    assert not graph.group("embed").prunable
    assert "depends on the channel count" in graph.group("embed").reason
    plan = ns.plan(model, ids, RESIDUAL)
    assert plan.config is not None and plan.config.residual is True
    assert "residual" not in json.dumps(ns.PruneConfig().to_dict()) or (
        ns.PruneConfig.from_dict(RESIDUAL.to_dict()) == RESIDUAL
    )
    with pytest.raises(InputError, match="residual must be True or False"):
        ns.PruneConfig(residual=1)  # type: ignore[arg-type]


def test_graph_analysed_without_residual_is_refused() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    graph = ns.analyze(model, ids)
    with pytest.raises(InputError, match=r"residual=True\)"):
        ns.plan(model, ids, RESIDUAL, graph=graph)
    graph = ns.analyze(model, ids, residual=True)
    assert [g.name for g in residual_groups(graph)] == ["embed"]
    assert ns.plan(model, ids, RESIDUAL, graph=graph).tensors["embed.weight"]


def test_llama_pruned_equals_the_zeroed_original() -> None:
    model, inputs = build("hf_llama_gqa")
    small = ns.prune(model, inputs, RESIDUAL)
    assert small.model.embed_tokens.weight.shape[1] == 45
    assert small.lm_head.weight.shape == (128, 45)
    assert small.model.layers[0].self_attn.q_proj.weight.shape[1] == 45
    assert small.model.layers[0].mlp.down_proj.weight.shape[0] == 45
    eps = model.model.layers[0].input_layernorm.variance_epsilon
    assert small.model.layers[0].input_layernorm.variance_epsilon == pytest.approx(eps * 64 / 45)
    _assert_exact(model, small, inputs)


@pytest.mark.parametrize("name", ["hf_llama_gqa", "hf_mistral_gqa", "hf_qwen2_gqa"])
def test_gqa_decoders_lose_a_quarter_of_their_parameters(name: str) -> None:
    model, inputs = build(name)
    small = ns.prune(model, inputs, RESIDUAL)
    assert 1 - _params(small) / _params(model) >= 0.25
    with torch.no_grad():
        assert torch.isfinite(small(**inputs).logits).all()


def test_tied_embeddings_stay_tied() -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    inputs = {"input_ids": torch.randint(0, 64, (2, 6)), "use_cache": False}
    small = ns.prune(model, inputs, RESIDUAL)
    assert small.lm_head.weight is small.model.embed_tokens.weight
    assert small.lm_head.weight.shape == (64, 23)
    assert sum(1 for _ in small.parameters()) == sum(1 for _ in model.parameters())
    _assert_exact(model, small, inputs)


def test_width_layer_norm_equals_layer_norm_over_the_zero_padded_stream() -> None:
    torch.manual_seed(0)
    ln = nn.LayerNorm(16, eps=1e-3)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(4, 5, 16) + 3.0  # an offset mean, as residual streams have
    same = WidthLayerNorm(16, 16, eps=1e-3)
    same.load_state_dict(ln.state_dict())
    torch.testing.assert_close(same(x), ln(x))
    kept = [0, 2, 3, 7, 8, 9, 12, 15]
    narrow = WidthLayerNorm(len(kept), 16, eps=1e-3)
    narrow.load_state_dict({k: v[kept] for k, v in ln.state_dict().items()})
    padded = torch.zeros_like(x)
    padded[..., kept] = x[..., kept]
    torch.testing.assert_close(narrow(x[..., kept]), ln(padded)[..., kept])
    with pytest.raises(PlanError, match="kept"):
        WidthLayerNorm(17, 16)


@pytest.mark.parametrize("name", ["hf_gpt2", "hf_vit", "hf_bert"])
def test_layer_norm_models_are_pruned_exactly(name: str) -> None:
    model, inputs = build(name)
    small = ns.prune(model, inputs, RESIDUAL)
    norms = [m for m in small.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(isinstance(m, WidthLayerNorm) and m.width == 64 for m in norms)
    assert all(m.normalized_shape == (45,) for m in norms)
    assert 1 - _params(small) / _params(model) >= 0.4
    _assert_exact(model, small, inputs)
    if name == "hf_gpt2":  # GPT-2 ties its head to the token embedding
        assert small.lm_head.weight is small.transformer.wte.weight


def test_save_and_load_round_trip(tmp_path: object) -> None:
    for name in ("hf_llama_gqa", "hf_gpt2"):
        model, inputs = build(name)
        small = ns.prune(model, inputs, RESIDUAL)
        folder = ns.save(small, tmp_path / name)  # type: ignore[operator]
        back = ns.load(folder)
        for a, b in zip(_outputs(back, inputs), _outputs(small, inputs), strict=True):
            torch.testing.assert_close(a, b)
        assert [type(m) for m in back.modules()] == [type(m) for m in small.modules()]
        # the config says the new width; the folder records the base one the plan replays on
        assert small.config.hidden_size == back.config.hidden_size == 45
        assert model.config.hidden_size == 64
        manifest = json.loads((folder / "netsculpt.json").read_text())
        base = manifest["base"]["config"]
        assert base.get("hidden_size", base.get("n_embd")) == 64
        if name == "hf_llama_gqa":
            eps = small.model.norm.variance_epsilon
            assert back.model.norm.variance_epsilon == pytest.approx(eps)
            assert small.config.rms_norm_eps == pytest.approx(model.config.rms_norm_eps * 64 / 45)
            assert base["rms_norm_eps"] == model.config.rms_norm_eps
        else:
            assert small.config.n_embd == 45 and base["n_embd"] == 64
            assert back.lm_head.weight is back.transformer.wte.weight


def test_onnx_export_of_a_residual_pruned_model_runs(tmp_path: object) -> None:
    pytest.importorskip("onnxruntime")
    from netsculpt.export.onnx import check_onnx, export_onnx

    torch.manual_seed(0)
    model = PreNormBlocks(layer_norm=True).eval()
    ids = torch.randint(0, 50, (3, 7))
    small = ns.prune(model, ids, RESIDUAL)
    assert isinstance(small.final, WidthLayerNorm)
    _assert_exact(model, small, ids)
    path = export_onnx(
        small,
        ids,
        tmp_path / "blocks.onnx",
        exporter="torchscript",  # type: ignore[operator]
    )
    assert check_onnx(small, ids, path) < 1e-4


@pytest.mark.slow
def test_onnx_export_of_a_residual_pruned_llama_runs(tmp_path: object) -> None:
    pytest.importorskip("onnxruntime")
    from netsculpt.export.onnx import check_onnx, export_onnx

    model, inputs = build("hf_llama_gqa")
    small = ns.prune(model, inputs, RESIDUAL)
    path = export_onnx(small, inputs, tmp_path / "llama.onnx")  # type: ignore[operator]
    assert check_onnx(small, inputs, path) < 1e-3


def test_pruning_twice_composes_into_one_plan() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    once = ns.prune(model, ids, RESIDUAL)
    twice = ns.prune(once, ids, RESIDUAL)
    plan = ns.plan_of(twice)
    assert ("norm2", 32, 17) in plan.norms  # 23 kept, then 17 of those
    replayed = ns.apply(model, plan)
    torch.testing.assert_close(replayed(ids), twice(ids))
    _assert_exact(model, twice, ids)


class ExpRms(HandRms):
    """An RMS norm that scales by ``exp(weight)``: not a form netsculpt resizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight.exp() * (x * torch.rsqrt(variance + self.variance_epsilon))


def test_a_norm_netsculpt_cannot_resize_is_named() -> None:
    model = PreNormBlocks().eval()
    model.norm1 = ExpRms(32)
    ids = torch.randint(0, 50, (3, 7))
    with pytest.raises(UnsupportedOperationError) as info:
        ns.plan(model, ids, RESIDUAL)
    message = str(info.value)
    assert "'norm1'" in message and "residual=False" in message
    assert "directly or as 1 + weight" in message
    # without the option the model prunes as before
    assert ns.plan(model, ids, ratio=0.3).tensors


def test_gemma_norms_scale_by_one_plus_weight(tmp_path: object) -> None:
    torch.manual_seed(0)
    model, inputs = build("hf_gemma")  # (1 + weight) * x / rms(x), embeddings * sqrt(64)
    with torch.no_grad():  # trained weights are not the zeros Gemma starts from
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)
    small = ns.prune(model, inputs, RESIDUAL)
    plan = ns.plan_of(small)
    assert ("model.layers.0.input_layernorm", 64, 45) in plan.norms
    assert "kept_whole" not in plan.meta
    assert 1 - _params(small) / _params(model) >= 0.25
    kept = torch.tensor(plan.tensors["model.layers.0.input_layernorm.weight"][0])
    before = model.model.layers[0].input_layernorm.weight[kept]
    after = small.model.layers[0].input_layernorm.weight
    torch.testing.assert_close(1 + after, (64 / 45) ** 0.5 * (1 + before))
    _assert_exact(model, small, inputs)
    back = ns.load(ns.save(small, tmp_path / "gemma"))  # type: ignore[operator]
    for a, b in zip(_outputs(back, inputs), _outputs(small, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_norms_inside_heads_do_not_decide_the_residual_width() -> None:
    # Qwen3 normalises each head's queries and keys (q_norm / k_norm): those keep their width
    # and are not why a hidden stream that is the model's output stays whole
    model, inputs = build("hf_qwen3_gqa")
    with pytest.raises(UnsupportedOperationError, match=r"feeds a model output.*protect_outputs"):
        ns.plan(model.model, inputs, RESIDUAL)
    small = ns.prune(model, inputs, RESIDUAL)
    assert small.model.layers[0].self_attn.q_norm.weight.shape == (16,)
    assert small.model.embed_tokens.weight.shape[1] < 64
    _assert_exact(model, small, inputs)


def test_a_model_without_norms_is_refused() -> None:
    model, x = build("mlp")
    with pytest.raises(UnsupportedOperationError, match="no nn.LayerNorm or RMS norm"):
        ns.plan(model, x, RESIDUAL)


def test_residual_channels_get_scores_from_magnitude_and_activation() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    calib = [torch.randint(0, 50, (3, 7)) for _ in range(2)]
    for importance in ("magnitude", "activation"):
        plan = ns.plan(model, ids, RESIDUAL, importance=importance, calib=calib)
        assert len(plan.tensors["embed.weight"][1]) == 23
    graph = ns.analyze(model, ids, residual=True)
    group = graph.group("embed")
    ctx = ns.pruning.importance.ImportanceContext(
        model=model, graph=graph, calib=calib, loss_fn=None, seed=0
    )
    for importance in ("magnitude", "activation"):
        scores = ns.pruning.importance.get_importance(importance)(group, ctx)
        assert scores.shape == (32,) and np.isfinite(scores).all() and np.ptp(scores) > 0


def _plan_data() -> tuple[nn.Module, torch.Tensor, dict[str, object]]:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    return model, ids, ns.plan(model, ids, RESIDUAL).to_dict()


def test_plan_json_round_trips_its_norms() -> None:
    model, ids, data = _plan_data()
    assert data["norms"] == [["norm1", 32, 23], ["norm2", 32, 23], ["final", 32, 23]]
    plan = Plan.from_json(json.dumps(data))
    torch.testing.assert_close(ns.apply(model, plan)(ids), ns.prune(model, ids, RESIDUAL)(ids))


@pytest.mark.parametrize(
    ("norms", "match"),
    [
        ([["norm1", 32, 33]], r"norms\[0\]\[2\]"),
        ([["norm1", 32, 0]], r"norms\[0\]\[2\]"),
        ([["norm1", 32]], r"norms\[0\]"),
        ([["norm1", "32", 22]], r"norms\[0\]\[1\]"),
        ([["norm1", 32.0, 22]], r"norms\[0\]\[1\]"),
        ([["norm1", 1e300, 22]], r"norms\[0\]\[1\]"),
        ([["norm1", 32, 23], ["norm1", 32, 23]], "listed twice"),
        ([["", 32, 23]], "empty"),
        ({"norm1": [32, 23]}, "expected a list"),
    ],
)
def test_hostile_norm_entries_are_refused(norms: object, match: str) -> None:
    _model, _ids, data = _plan_data()
    data["norms"] = norms
    with pytest.raises(PlanError, match=match):
        Plan.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("norms", "match"),
    [
        ([["up1", 32, 23]], "a Linear"),  # not a norm
        ([["norm1", 31, 23]], "from 31 channels, but it has 32"),
        ([["norm1", 32, 21]], "keeps 23 of its weight"),
        ([["nowhere", 32, 23]], "does not have"),
    ],
)
def test_norm_entries_that_do_not_fit_the_model_are_refused(norms: object, match: str) -> None:
    model, _ids, data = _plan_data()
    data["norms"] = norms
    plan = Plan.from_json(json.dumps(data))
    with pytest.raises(PlanError, match=match):
        ns.apply(model, plan)


def test_a_norm_with_a_hostile_epsilon_is_refused() -> None:
    model, _ids, data = _plan_data()
    plan = Plan.from_json(json.dumps(data))
    for eps in (float("nan"), -1.0, 1e308):
        bad = copy.deepcopy(model)
        bad.norm1.variance_epsilon = eps
        with pytest.raises(PlanError, match="epsilon"):
            ns.apply(bad, plan)
    assert model.norm1.variance_epsilon == 1e-2


def test_layer_norms_resized_once_are_pruned_again() -> None:
    model, inputs = build("hf_gpt2")
    once = ns.prune(model, inputs, RESIDUAL)
    twice = ns.prune(once, inputs, RESIDUAL)
    assert twice.transformer.ln_f.width == 64
    assert twice.transformer.ln_f.normalized_shape == (32,)  # 45 - floor(0.3 * 45)
    assert ("transformer.ln_f", 64, 32) in ns.plan_of(twice).norms
    assert twice.config.n_embd == 32
    _assert_exact(model, twice, inputs)
    replayed = ns.apply(model, ns.plan_of(twice))
    torch.testing.assert_close(replayed(**inputs).logits, twice(**inputs).logits)


def test_the_residual_group_takes_its_own_ratio() -> None:
    torch.manual_seed(0)
    model = PreNormBlocks().eval()
    ids = torch.randint(0, 50, (3, 7))
    config = ns.PruneConfig(ratio={"embed": 0.5, "*": 0.0}, residual=True)
    plan = ns.plan(model, ids, config)
    assert len(plan.tensors["embed.weight"][1]) == 16
    assert "up1.weight" not in plan.tensors or 0 not in plan.tensors["up1.weight"]
    assert plan.widths["embed"] == (32, 16) and plan.widths["up1"] == (64, 64)


RESIDUAL_ZOO = [
    "hf_roberta",
    "hf_distilbert",
    "hf_albert",
    "hf_electra",
    "hf_gpt_neox",
    "hf_opt",
    "hf_qwen3_gqa",
    "hf_gemma",
    "hf_phi",
    "hf_falcon",
    "hf_beit",
    "hf_dinov2",
    "hf_swin",
    "hf_segformer",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", RESIDUAL_ZOO)
def test_residual_width_across_the_zoo(name: str, tmp_path: object) -> None:
    model, inputs = build(name)
    small = ns.prune(model, inputs, RESIDUAL)
    assert ns.plan_of(small).norms and 1 - _params(small) / _params(model) >= 0.35
    _assert_exact(model, small, inputs)
    back = ns.load(ns.save(small, tmp_path / name))  # type: ignore[operator]
    for a, b in zip(_outputs(back, inputs), _outputs(small, inputs), strict=True):
        torch.testing.assert_close(a, b)


def blocks() -> tuple[nn.Module, torch.Tensor]:
    """The command line's model factory for the tests below."""
    torch.manual_seed(0)
    return PreNormBlocks().eval(), torch.randint(0, 50, (3, 7))


def test_the_command_line_prunes_the_residual_width(tmp_path: object) -> None:
    from typer.testing import CliRunner

    from netsculpt.cli import app

    runner = CliRunner()
    out = tmp_path / "small"  # type: ignore[operator]
    result = runner.invoke(
        app, ["prune", "test_residual_width:blocks", "--residual", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "32 -> 23" in result.output
    assert ns.load(out, base=blocks()[0]).embed.weight.shape == (50, 23)
    result = runner.invoke(app, ["prune", "test_cli:tiny", "--residual"])
    assert result.exit_code != 0 and "no nn.LayerNorm or RMS norm" in result.output
    # rotated first: the same widths, other weights, and the folder reloads what was pruned
    rotated = tmp_path / "rotated"  # type: ignore[operator]
    args = ["prune", "test_residual_width:blocks", "--residual", "--rotate"]
    result = runner.invoke(app, [*args, "--out", str(rotated)])
    assert result.exit_code == 0, result.output
    assert "32 -> 23" in result.output
    model, ids = blocks()
    small = ns.load(rotated, base=model)
    again = ns.load(out, base=blocks()[0])
    assert small.embed.weight.shape == (50, 23)
    assert not torch.allclose(small.embed.weight, again.embed.weight)
    result = runner.invoke(app, ["prune", "test_residual_width:blocks", "--rotate"])
    assert result.exit_code != 0 and "pass --residual" in result.output


@pytest.mark.parametrize(
    ("model_type", "cls"), [("gemma2", "Gemma2ForCausalLM"), ("gemma3_text", "Gemma3ForCausalLM")]
)
def test_later_gemma_decoders_prune_their_residual_width(model_type: str, cls: str) -> None:
    import transformers

    from netsculpt.testing.wild import tiny_config

    torch.manual_seed(0)
    model = getattr(transformers, cls)(tiny_config(model_type)).eval()
    ids = torch.randint(3, 100, (2, 16))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    small = ns.prune(model, inputs, RESIDUAL)
    plan = ns.plan_of(small)
    assert plan is not None and plan.norms and "kept_whole" not in plan.meta
    assert small.config.hidden_size < model.config.hidden_size
    _assert_exact(model, small, inputs)
