"""ns.reconstruct: least-squares repair of a pruned model from calibration batches."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model, flatten_outputs
from netsculpt.errors import ExampleInputsError, InputError, UnknownNameError


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    ).eval()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def _error(small: nn.Module, original: nn.Module, batches: list) -> float:
    """Relative output error of ``small`` against ``original`` over ``batches``."""
    num = den = 0.0
    with torch.no_grad():
        for batch in batches:
            want = flatten_outputs(call_model(original, batch))[0]
            got = flatten_outputs(call_model(small, batch))[0]
            num += float((got - want).pow(2).sum())
            den += float(want.pow(2).sum())
    return math.sqrt(num / den)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- error drops on held-out batches ---------------------------------------------------------------
@pytest.mark.parametrize("sequential", [True, False])
def test_mlp_refit_lowers_held_out_error(sequential: bool) -> None:
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    calib = [torch.randn(64, 16) for _ in range(8)]
    held_out = [torch.randn(128, 16) for _ in range(2)]
    before = _error(small, model, held_out)
    result = ns.reconstruct(small, model, calib, ns.ReconstructConfig(sequential=sequential))
    after = _error(small, model, held_out)
    assert [r.name for r in result.layers] == ["2", "4"]  # the layers whose input was cut
    assert all(r.method == "refit" and r.reason == "" for r in result.layers)
    assert all(r.error_after < r.error_before for r in result.layers)
    assert result.layers[0].rows == 8 * 64
    if sequential:  # fitted to the refitted model's own inputs: a real gain
        assert after < 0.7 * before, (before, after)
    assert ns.reconstruction_of(small) is result
    assert tuple(small[2].weight.shape) == (32, 32)  # shapes are kept


def test_scope_changed_also_refits_layers_that_lost_only_outputs() -> None:
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    calib = [torch.randn(64, 16) for _ in range(4)]
    held_out = [torch.randn(128, 16)]
    before = _error(small, model, held_out)
    result = ns.reconstruct(small, model, calib, ns.ReconstructConfig(scope="changed"))
    methods = {r.name: r.method for r in result.layers}
    # layer 0 reads the model's own inputs: its kept outputs already match
    assert methods == {"0": "skipped", "2": "refit", "4": "refit"}
    assert "already matches" in result.layers[0].reason
    assert _error(small, model, held_out) < 0.7 * before
    with pytest.raises(UnknownNameError, match="scope"):
        ns.ReconstructConfig(scope="everything")  # type: ignore[arg-type]


def test_without_the_output_cache_the_fit_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("netsculpt.recovery.reconstruct")  # not the function
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    again = copy.deepcopy(small)
    calib = [torch.randn(64, 16) for _ in range(3)]
    ns.reconstruct(small, model, calib)
    monkeypatch.setattr(module, "_CACHE_BYTES", 0)  # run the original up to each layer again
    ns.reconstruct(again, model, calib)
    for name, value in small.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value)


def test_cnn_refit_lowers_held_out_error() -> None:
    model = _cnn()
    small = ns.prune(model, torch.randn(2, 3, 12, 12), ratio=0.5)
    calib = [torch.randn(16, 3, 12, 12) for _ in range(6)]
    held_out = [torch.randn(32, 3, 12, 12)]
    before = _error(small, model, held_out)
    result = ns.reconstruct(small, model, calib)
    after = _error(small, model, held_out)
    assert [r.name for r in result.layers] == ["2", "4", "8"]
    assert [r.layer for r in result.layers] == ["Conv2d", "Conv2d", "Linear"]
    assert result.layers[0].features == 8 * 9
    assert result.layers[1].rows == 6 * 16 * 6 * 6  # stride 2: 6x6 positions per image
    assert after < 0.7 * before, (before, after)


# -- exact recovery: the removed inputs are combinations of kept ones ------------------------------
def _make_removed_copies(model: nn.Module, small: nn.Module, first: str) -> None:
    """Give every unit of layer ``first`` that the plan removed the weights of a kept unit,
    times 2, so that after the ReLU it outputs exactly twice that unit."""
    plan = ns.plan_of(small)
    assert plan is not None
    kept = list(plan.tensors[f"{first}.weight"][0])
    layer = model.get_submodule(first)
    removed = [i for i in range(layer.weight.shape[0]) if i not in kept]
    with torch.no_grad():
        for k, r in enumerate(removed):
            source = kept[k % len(kept)]
            layer.weight[r] = 2.0 * layer.weight[source]
            layer.bias[r] = 2.0 * layer.bias[source]


def test_exact_recovery_linear() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    small = ns.prune(model, torch.randn(4, 8), ratio=0.5)
    _make_removed_copies(model, small, "0")
    calib = [torch.randn(64, 8) for _ in range(4)]
    held_out = [torch.randn(64, 8)]
    assert _error(small, model, held_out) > 0.1
    ns.reconstruct(small, model, calib, ns.ReconstructConfig(damping=0.0))
    x = held_out[0]
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "conv",
    [
        lambda: (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, stride=2, padding=1)),
        lambda: (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 4, 3, padding=2, dilation=2, padding_mode="reflect"),
        ),
        lambda: (nn.Conv1d(3, 8, 5, padding=2), nn.Conv1d(8, 4, 4, padding="same", dilation=3)),
    ],
    ids=["conv2d-stride", "conv2d-dilated-reflect", "conv1d-same"],
)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_exact_recovery_conv(conv) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    first, second = conv()
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    shape = (3, 10, 10) if isinstance(first, nn.Conv2d) else (3, 24)
    small = ns.prune(model, torch.randn(2, *shape), ratio=0.5)
    _make_removed_copies(model, small, "0")
    calib = [torch.randn(16, *shape) for _ in range(4)]
    x = torch.randn(8, *shape)
    assert _error(small, model, [x]) > 0.1
    result = ns.reconstruct(small, model, calib, ns.ReconstructConfig(damping=0.0))
    assert [(r.name, r.method) for r in result.layers] == [("2", "refit")]
    assert result.layers[0].error_after < 1e-5
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)


# -- bias compensation and fallbacks ---------------------------------------------------------------
def test_bias_mode_keeps_weights_and_centres_the_error() -> None:
    model = _mlp()
    model[4].bias = None  # the last layer has no bias to compensate
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    weights = {k: v for k, v in _params(small).items() if k.endswith("weight")}
    bias_before = small[2].bias.detach().clone()
    calib = [torch.randn(64, 16) for _ in range(4)]
    result = ns.reconstruct(small, model, calib, ns.ReconstructConfig(method="bias"))
    for name, value in weights.items():
        torch.testing.assert_close(small.state_dict()[name], value)
    assert not torch.equal(small[2].bias, bias_before)
    first, last = result.layers
    assert (first.method, first.reason) == ("bias", "")
    assert first.error_after < first.error_before
    assert last.method == "skipped" and "no bias" in last.reason
    assert result.skipped == (last,)
    # the mean error of layer 2 over the calibration rows is now zero
    with torch.no_grad():
        x = torch.cat(calib)
        kept = list(ns.plan_of(small).tensors["2.weight"][0])
        want = model[:3](x)[:, kept]
        got = small[:3](x)
    torch.testing.assert_close((got - want).mean(0), torch.zeros(len(kept)), atol=1e-5, rtol=0)


def test_wide_layers_and_few_rows_fall_back_to_bias() -> None:
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    calib = [torch.randn(64, 16) for _ in range(2)]
    result = ns.reconstruct(small, model, calib, ns.ReconstructConfig(max_features=16))
    assert [r.method for r in result.layers] == ["bias", "bias"]
    assert "33 input features exceed max_features=16" in result.layers[0].reason
    few = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    result = ns.reconstruct(few, model, [torch.randn(8, 16)])
    assert result.layers[0].method == "bias"
    assert "8 calibration rows for 33 unknowns" in result.layers[0].reason


def test_grouped_convolution_is_bias_compensated() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # pruned to 4 -> 4 channels in 2 groups
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    small = ns.prune(model, torch.randn(2, 3, 8, 8), ratio=0.5)
    weight = small[2].weight.detach().clone()
    result = ns.reconstruct(small, model, [torch.randn(16, 3, 8, 8) for _ in range(4)])
    grouped = {r.name: r for r in result.layers}["2"]
    assert grouped.method == "bias" and "groups=2" in grouped.reason
    torch.testing.assert_close(small[2].weight, weight)
    assert grouped.error_after < grouped.error_before


# -- a transformers model --------------------------------------------------------------------------
def test_hf_bert_prunes_and_reconstructs() -> None:
    from netsculpt.testing import zoo

    model, example = zoo.build("hf_bert")
    small = ns.prune(model, example, ratio=0.5)
    gen = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        mask = torch.ones(8, 16, dtype=torch.long)
        mask[::2, -3:] = 0  # padded rows, left out of the fit
        return {"input_ids": torch.randint(3, 128, (8, 16), generator=gen), "attention_mask": mask}

    calib = [batch() for _ in range(16)]
    held_out = [batch() for _ in range(2)]
    before = _error(small, model, held_out)
    result = ns.reconstruct(small, model, calib)
    after = _error(small, model, held_out)
    names = [r.name for r in result.layers]
    assert "bert.encoder.layer.0.attention.output.dense" in names
    assert "bert.encoder.layer.1.output.dense" in names
    tokens = sum(int(b["attention_mask"].sum()) for b in calib)
    assert result.layers[0].rows == tokens
    assert after < 0.7 * before, (before, after)


def test_hf_gpt2_conv1d_layers_are_refitted() -> None:
    from netsculpt.testing import zoo

    model, example = zoo.build("hf_gpt2")  # transformers Conv1D: weight [in, out]
    small = ns.prune(model, example, ratio=0.5)
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 128, (8, 16), generator=gen) for _ in range(10)]
    calib, held_out = ids[:8], ids[8:]
    before = _error(small, model, held_out)
    result = ns.reconstruct(small, model, calib)
    assert {r.layer for r in result.layers} == {"Conv1D"}
    assert [r.name.split(".")[-1] for r in result.layers] == ["c_proj"] * 4  # attn, mlp x 2
    assert all(r.method == "refit" for r in result.layers)
    assert _error(small, model, held_out) < 0.7 * before


# -- PruneConfig(reconstruct=...) ------------------------------------------------------------------
def test_prune_config_reconstructs_after_applying() -> None:
    model = _mlp()
    example = torch.randn(4, 16)
    calib = [torch.randn(64, 16) for _ in range(8)]
    held_out = [torch.randn(128, 16)]
    config = ns.PruneConfig(ratio=0.5, reconstruct=True)
    assert config.reconstruct == ns.ReconstructConfig()
    small = ns.prune(model, example, config, calib=iter(calib))  # an iterator is read once
    plain = ns.prune(model, example, ratio=0.5)
    result = ns.reconstruction_of(small)
    assert result is not None and len(result.layers) == 2
    assert ns.reconstruction_of(plain) is None
    assert _error(small, model, held_out) < 0.7 * _error(plain, model, held_out)
    plan = ns.plan_of(small)
    assert plan.meta["config"]["reconstruct"]["method"] == "refit"
    assert ns.Plan.from_json(plan.to_json()).config == config
    bias_config = ns.PruneConfig(reconstruct=ns.ReconstructConfig(method="bias"))
    assert ns.PruneConfig.from_json(bias_config.to_json()) == bias_config
    assert ns.PruneConfig(reconstruct=False).reconstruct is None


def test_prune_config_reconstruct_needs_calib_and_a_copy() -> None:
    model = _mlp()
    config = ns.PruneConfig(ratio=0.5, reconstruct=True)
    with pytest.raises(InputError, match=r"pass calib=\[batch, \.\.\.\]"):
        ns.prune(model, torch.randn(4, 16), config)
    before = _params(model)
    with pytest.raises(InputError, match="inplace=False"):
        ns.prune(model, torch.randn(4, 16), config, calib=[torch.randn(8, 16)], inplace=True)
    for name, value in before.items():
        torch.testing.assert_close(model.state_dict()[name], value)
    with pytest.raises(InputError, match="reconstruct="):
        ns.PruneConfig(reconstruct="yes")


# -- bad input -------------------------------------------------------------------------------------
def test_wrong_calib_shape_names_the_layer_and_changes_nothing() -> None:
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    before = _params(small)
    with pytest.raises(ExampleInputsError, match=r"calib\[0\].*module '0'.*shaped like"):
        ns.reconstruct(small, model, [torch.randn(8, 7)])
    with pytest.raises(ExampleInputsError, match=r"calib\[1\]"):
        ns.reconstruct(small, model, [torch.randn(8, 16), torch.randn(8, 5)])
    for name, value in before.items():
        torch.testing.assert_close(small.state_dict()[name], value)
    assert ns.reconstruction_of(small) is None
    with pytest.raises(ExampleInputsError, match="calib is empty"):
        ns.reconstruct(small, model, [])
    with pytest.raises(ExampleInputsError, match=r"calib=\[batch\]"):
        ns.reconstruct(small, model, torch.randn(8, 16))


def test_models_that_do_not_belong_together_are_refused() -> None:
    model = _mlp()
    small = ns.prune(model, torch.randn(4, 16), ratio=0.5)
    with pytest.raises(InputError, match="not pruned by netsculpt"):
        ns.reconstruct(copy.deepcopy(model), model, [torch.randn(8, 16)])
    other = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    with pytest.raises(InputError, match="not the model small was pruned from"):
        ns.reconstruct(small, other, [torch.randn(8, 16)])
    with pytest.raises(InputError, match="same object"):
        ns.reconstruct(small, small, [torch.randn(8, 16)])
    with pytest.raises(InputError, match="ReconstructConfig"):
        ns.reconstruct(small, model, [torch.randn(8, 16)], {"method": "bias"})  # type: ignore[arg-type]


# -- the config ------------------------------------------------------------------------------------
def test_config_round_trip_and_validation() -> None:
    config = ns.ReconstructConfig(
        method="bias",
        damping=1e-2,
        max_features=512,
        sequential=False,
        scope="changed",
        ignore_padding=False,
    )
    assert ns.ReconstructConfig.from_dict(config.to_dict()) == config
    assert ns.ReconstructConfig.from_json(config.to_json()) == config
    assert ns.ReconstructConfig(damping=0).damping == 0.0
    with pytest.raises(UnknownNameError, match="did you mean 'refit'"):
        ns.ReconstructConfig(method="refitt")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="damping"):
        ns.ReconstructConfig(damping=-1.0)
    with pytest.raises(InputError, match="max_features"):
        ns.ReconstructConfig(max_features=0)
    with pytest.raises(InputError, match="sequential must be True or False"):
        ns.ReconstructConfig(sequential="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="did you mean 'damping'"):
        ns.ReconstructConfig.from_dict({"dampening": 0.1})
    with pytest.raises(InputError, match="not JSON"):
        ns.ReconstructConfig.from_json("{")
