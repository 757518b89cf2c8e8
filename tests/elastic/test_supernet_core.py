"""ns.elastic: the super-network computes what the model did, its sub-networks are nested
slices of its weights, and extracting one gives the same model the slicing ran."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt._inputs import call_model, flatten_outputs
from netsculpt.errors import InputError, NothingToPruneError, UnknownNameError
from netsculpt.pruning.importance import IMPORTANCE, ImportanceContext
from netsculpt.supernets.space import ElasticSpace
from netsculpt.supernets.supernet import recalibrate_batchnorm
from netsculpt.testing.zoo import ZOO

MODELS = [
    "mlp",
    "resnet_basic",
    "densenet",
    "inception",
    "mobilenet_v2",
    "transformer_block",
    "tied_lm",
    "hf_bert",
    "hf_llama_gqa",
    "hf_gpt2",
]


def _out(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return flatten_outputs(call_model(model, inputs))[0]


class ConvNet(nn.Module):
    """Conv-BN-ReLU twice, a residual block, pooled into a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1)
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.block(h)
        return self.head(h.mean((2, 3)))


@pytest.fixture
def convnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 8, 8))
    return model.eval(), torch.randn(4, 3, 8, 8)


@pytest.mark.parametrize("name", MODELS)
def test_every_sub_network_runs_as_its_extracted_model(name: str) -> None:
    model, x = ZOO[name]()
    model.eval()
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.25, 0.5, 1.0), depth=True))
    assert len(supernet.space) >= 2
    # reordering the units changed nothing the model computes
    torch.testing.assert_close(_out(supernet, x), _out(model, x), rtol=1e-4, atol=1e-5)
    rng = random.Random(0)
    for arch in (supernet.smallest(), supernet.sample(rng), supernet.sample(rng)):
        with supernet.use(arch):
            sliced = _out(supernet, x)
        small = supernet.extract(arch)
        assert ns.count_params(small) < ns.count_params(model)
        torch.testing.assert_close(sliced, _out(small, x), rtol=1e-4, atol=1e-5)
        assert sliced.shape == _out(model, x).shape
    assert supernet.active == supernet.largest()  # use() puts the previous one back


def test_sub_networks_are_nested_prefixes(convnet: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.25, 0.5, 0.75)))
    assert supernet.space["stem.0"].options == (4, 8, 12, 16)
    full = supernet.model.stem[0].weight
    for n in (4, 8, 12):
        small = supernet.extract({**supernet.largest(), "stem.0": n})
        # the first n filters of the ordered model, and nothing else
        torch.testing.assert_close(small.stem[0].weight, full[:n])
    # position j holds the original filter orders[j], the most important first
    order = supernet.orders["stem.0"]
    torch.testing.assert_close(full, model.stem[0].weight[order])
    graph = ns.analyze(model, x)
    context = ImportanceContext(model=model, graph=graph)
    scores = IMPORTANCE["magnitude"](graph.group("stem.0"), context)
    assert list(scores[order]) == sorted(scores, reverse=True)


def test_gradients_reach_only_the_slice_a_sub_network_uses(
    convnet: tuple[nn.Module, torch.Tensor],
) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5,)))
    supernet.train()
    with supernet.use({**supernet.largest(), "stem.0": 8}):
        supernet(x).sum().backward()
    grad = supernet.model.stem[0].weight.grad
    assert grad is not None and grad[:8].abs().sum() > 0
    assert grad[8:].abs().sum() == 0
    # the sliced weights were swapped back: the module holds its full parameters again
    assert supernet.model.stem[0].weight.shape[0] == 16
    assert isinstance(supernet.model.stem[0].weight, nn.Parameter)


def test_smaller_sub_networks_compute_less(convnet: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.25, 0.5), depth=True))
    macs = [
        ns.count_macs(supernet.extract(a), x) for a in (supernet.smallest(), supernet.largest())
    ]
    assert macs[0] < macs[1] / 4


def test_extracted_model_saves_loads_measures_and_exports(
    convnet: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5,), depth=True))
    arch = supernet.smallest()
    small = supernet.extract(arch)
    plan = ns.plan_of(small)
    assert plan is not None and plan.meta["elastic"]["arch"] == arch
    # the plan is against the original model: replaying it gives the same shapes
    replayed = ns.apply(model, plan)
    assert {k: v.shape for k, v in replayed.state_dict().items()} == {
        k: v.shape for k, v in small.state_dict().items()
    }
    ns.save(small, tmp_path / "small", example_inputs=x)
    again = ns.load(tmp_path / "small", base=ConvNet())
    torch.testing.assert_close(_out(again, x), _out(small, x))
    assert ns.measure(small, x, repeats=2, warmup=0, memory=False).params == ns.count_params(small)
    ns.export_onnx(small, x, tmp_path / "small.onnx")


def test_batch_norm_statistics_are_recomputed_per_sub_network(
    convnet: tuple[nn.Module, torch.Tensor],
) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5,)))
    arch = {**supernet.largest(), "stem.0": 8}
    batches = [torch.randn(16, 3, 8, 8) * 3 + 1 for _ in range(4)]
    shared = supernet.extract(arch)
    calibrated = supernet.extract(arch, calib=batches)
    assert not torch.allclose(shared.stem[1].running_mean, calibrated.stem[1].running_mean)
    # the statistics are the batches' own: the mean of the first layer's outputs
    with torch.no_grad():
        conv = calibrated.stem[0](torch.cat(batches))
    torch.testing.assert_close(
        calibrated.stem[1].running_mean, conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-4
    )
    assert recalibrate_batchnorm(nn.Linear(2, 2), batches) == 0  # nothing to recompute


def test_the_space_is_plain_data(convnet: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5,), round_to=4, depth=True))
    space = supernet.space
    assert isinstance(space, ElasticSpace)
    kinds = {c.name: c.kind for c in space}
    assert kinds["stem.0"] == "width" and "block:block" in kinds
    assert space["stem.0"].options == (8, 16)
    assert supernet.sample(3) == supernet.sample(3)
    assert supernet.largest() == {c.name: c.options[-1] for c in space}
    assert supernet.smallest()["block:block"] is False
    assert space.size == float(len(space["stem.0"].options) * 2 * 2)
    assert space.to_dict()["choices"][0]["options"] == list(space.choices[0].options)
    assert "super-network" in supernet.describe()


@pytest.mark.parametrize(
    ("arch", "words"),
    [
        ([8], "must be a dict"),
        ({"nope": 8}, "the space does not have"),
        ({"stem.0": 5}, "offers [8, 16]"),
        ({"stem.0": True}, "offers [8, 16]"),
        ({"block:block": 1}, "keep the block or not"),
    ],
)
def test_an_arch_outside_the_space_is_refused(
    convnet: tuple[nn.Module, torch.Tensor], arch: Any, words: str
) -> None:
    model, x = convnet
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5,), depth=True))
    with pytest.raises(InputError) as info:
        supernet.extract(arch)
    assert words in str(info.value)
    with pytest.raises(InputError):
        supernet.set_arch(arch)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"keep": (0.0, 0.5)}, InputError, "not a keep fraction in (0, 1]"),
        ({"keep": (1.5,)}, InputError, "not a keep fraction in (0, 1]"),
        ({"keep": ()}, InputError, "at least one keep fraction"),
        ({"keep": "0.5"}, InputError, "sequence of numbers"),
        ({"widths": {"stem.0": (0,)}}, InputError, "not a positive number of units"),
        ({"round_to": 0}, InputError, "at least 1"),
        ({"depth": 3}, InputError, "module names"),
        ({"seed": -1}, InputError, "seed must be"),
    ],
)
def test_bad_configs_name_the_fix(fields: dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error) as info:
        ns.ElasticConfig(**fields)
    assert words in str(info.value) and "ElasticConfig(" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"widths": {"stem.0": (8, 64)}}, InputError, "has only 16"),
        ({"widths": {"nothing": (2,)}}, InputError, "matches no elastic group"),
        ({"groups": ("nothing",)}, InputError, "match no prunable group"),
        ({"depth": ("stem",)}, InputError, "not removable blocks"),
        ({"importance": "nope"}, UnknownNameError, "names no registered criterion"),
        ({"groups": ("nothing",), "exclude": ()}, InputError, "prunable groups: stem.0"),
    ],
)
def test_configs_that_do_not_fit_the_model_name_the_fix(
    convnet: tuple[nn.Module, torch.Tensor], fields: dict[str, Any], error: type, words: str
) -> None:
    model, x = convnet
    with pytest.raises(error) as info:
        ns.elastic(model, x, ns.ElasticConfig(**fields))
    assert words in str(info.value)


def test_nothing_elastic_is_refused(convnet: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = convnet
    with pytest.raises(NothingToPruneError, match="nothing in ConvNet can be elastic"):
        ns.elastic(model, x, ns.ElasticConfig(exclude=("stem", "block", "head")))
    with pytest.raises(InputError, match="takes an ElasticConfig"):
        ns.elastic(model, x, {"keep": (0.5,)})  # type: ignore[arg-type]


def test_a_criterion_that_needs_batches_gets_them(
    convnet: tuple[nn.Module, torch.Tensor],
) -> None:
    model, x = convnet
    with pytest.raises(InputError, match="needs calibration batches"):
        ns.elastic(model, x, ns.ElasticConfig(importance="taylor"))
    supernet = ns.elastic(
        model,
        x,
        ns.ElasticConfig(importance="activation"),
        calib=[torch.randn(4, 3, 8, 8)],
    )
    torch.testing.assert_close(_out(supernet, x), _out(model, x), rtol=1e-4, atol=1e-5)


def test_config_round_trips_through_json() -> None:
    config = ns.ElasticConfig(
        keep=(0.5, 0.25), widths={"a": (2, 4)}, depth=("layers.1",), round_to=8
    )
    assert config.keep == (0.25, 0.5, 1.0)
    assert ns.ElasticConfig.from_json(config.to_json()) == config
    with pytest.raises(InputError, match="has no field 'kep'; did you mean 'keep'"):
        ns.ElasticConfig.from_dict({"kep": [0.5]})


def test_random_sub_networks_of_a_residual_cnn_all_run() -> None:
    """Branches whose input and output widths follow different groups are not droppable
    (zeros in their place would have the wrong width); every drawn sub-network runs."""
    from netsculpt.tasks.mnist1d import ResNet1D

    torch.manual_seed(0)
    model, x = ResNet1D().eval(), torch.randn(3, 1, 40)
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.25, 0.5, 0.75), depth=True))
    assert "block:stage2.1.conv2" in supernet.fixed and "block:stage2.1" in supernet.space
    rng = random.Random(0)
    for _ in range(60):
        arch = supernet.sample(rng)
        with torch.no_grad(), supernet.use(arch):
            assert supernet(x).shape == (3, 10)
