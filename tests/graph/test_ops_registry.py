"""The handler registry: namespaced keys, one copy per analysis, one module per family."""

from __future__ import annotations

import importlib
import operator
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import fx, nn

import netsculpt as ns
import netsculpt.graph.ops as ops
from netsculpt.errors import InputError, UnsupportedOperationError
from netsculpt.graph import propagate
from netsculpt.graph.ops import HANDLERS, Registry, handles, op_name, qualify, supported_ops


@torch.library.custom_op("netsculpt_test::channel_gain", mutates_args=())
def channel_gain(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return x * gain


@channel_gain.register_fake
def _(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class GainNet(nn.Module):
    """Linear -> custom op with a per-neuron gain -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 8)
        self.gain = nn.Parameter(torch.rand(8) + 0.5)
        self.down = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.ops.netsculpt_test.channel_gain(self.up(x), self.gain))


def gain_handler(p: propagate.Propagator, node: fx.Node) -> Any:
    x, gain = p.desc(node.args[0]), p.desc(node.args[1])
    assert x is not None and gain is not None
    p.unify(x[-1], gain[0])
    return list(x)


X = torch.randn(3, 4)


@pytest.fixture
def default_handlers() -> Iterator[None]:
    saved = HANDLERS.copy()
    yield
    HANDLERS.clear()
    HANDLERS.update(saved)


def test_keys_are_namespaced_overload_packets() -> None:
    assert op_name(torch.ops.aten.linear.default) == "aten::linear"
    assert op_name(torch.ops.aten.add.Tensor) == "aten::add"
    assert op_name(torch.ops.aten.relu_.default) == "aten::relu_"
    assert op_name(torch.ops.netsculpt_test.channel_gain.default) == "netsculpt_test::channel_gain"
    assert op_name(operator.getitem) == "operator::getitem"
    assert qualify("linear") == "aten::linear"
    assert qualify("mylib::my_channel_scale") == "mylib::my_channel_scale"
    names = supported_ops()
    assert names == sorted(set(names))
    assert {"aten::linear", "aten::conv2d", "aten::softmax", "operator::getitem"} <= set(names)
    assert all(qualify(n) == n for n in names)


def test_bad_names_and_handlers_are_refused_with_the_fix() -> None:
    with pytest.raises(InputError, match=r"register aten::add: one handler serves"):
        qualify("aten::add.Tensor")
    with pytest.raises(InputError, match="'namespace::op'"):
        qualify("mylib.my_op")
    with pytest.raises(InputError, match="must be a string"):
        qualify(3)  # type: ignore[arg-type]
    reg = Registry()
    with pytest.raises(InputError, match="must be a function"):
        reg["mylib::op"] = "not a function"  # type: ignore[assignment]
    with pytest.raises(InputError, match="must be a mapping"):
        reg.update([("mylib::op", gain_handler)])
    # ns.analyze checks handlers= before it spends time on the capture
    with pytest.raises(InputError, match="must be a mapping"):
        ns.analyze(GainNet(), X, handlers=[gain_handler])  # type: ignore[arg-type]


def test_registry_is_a_mapping_with_normalised_keys() -> None:
    reg = Registry({"relu": gain_handler})
    assert list(reg) == ["aten::relu"] and len(reg) == 1
    assert reg["relu"] is reg["aten::relu"] is gain_handler
    assert "relu" in reg and "aten::relu" in reg
    assert "aten::relu.default" not in reg and 5 not in reg
    copy = reg.copy()
    del copy["relu"]
    assert "aten::relu" in reg and "aten::relu" not in copy


def test_bare_names_given_to_handles_mean_aten(default_handlers: None) -> None:
    @handles("netsculpt_test_op")
    def _fn(p: propagate.Propagator, node: fx.Node) -> Any:
        return None

    assert HANDLERS.lookup("aten::netsculpt_test_op") is _fn
    assert "aten::netsculpt_test_op" in supported_ops()
    assert propagate.handles is handles and propagate.HANDLERS is HANDLERS


def test_handlers_for_one_analysis_do_not_leak_into_the_next() -> None:
    extra = {"netsculpt_test::channel_gain": gain_handler}
    graph = ns.analyze(GainNet(), X, handlers=extra)
    up = graph.group("up")
    assert up.prunable and "gain" in up.params and not graph.skipped

    graph = ns.analyze(GainNet(), X)
    assert not graph.group("up").prunable
    assert [s.op for s in graph.skipped] == ["netsculpt_test::channel_gain"]
    assert "netsculpt_test::channel_gain" in graph.group("up").reason
    assert "netsculpt_test::channel_gain" not in HANDLERS
    with pytest.raises(UnsupportedOperationError, match=r"handlers=\{'netsculpt_test::channel"):
        ns.analyze(GainNet(), X, on_unsupported="error")


def test_handlers_override_a_default_for_one_analysis() -> None:
    def protect(p: propagate.Propagator, node: fx.Node) -> Any:
        d = p.desc(node.args[0])
        p.taint_desc(d, "protected by a test handler")
        return list(d or [])

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    graph = ns.analyze(model, X, handlers=Registry({"aten::relu": protect}))
    assert graph.group("0").reason == "protected by a test handler"
    assert ns.analyze(model, X).group("0").prunable
    assert HANDLERS["aten::relu"] is not protect


def test_a_handler_that_raises_protects_and_lists_the_op() -> None:
    def broken(p: propagate.Propagator, node: fx.Node) -> Any:
        raise ValueError("an argument form this handler does not expect")

    graph = ns.analyze(GainNet(), X, handlers={"netsculpt_test::channel_gain": broken})
    assert not graph.group("up").prunable
    (skipped,) = graph.skipped
    assert skipped.op == "netsculpt_test::channel_gain"
    assert "ValueError: an argument form" in skipped.reason


def test_an_aten_op_without_a_handler_is_skipped_by_its_namespaced_name() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.fft.fft(self.a(x)).real)

    graph = ns.analyze(Odd(), X)
    ops_skipped = [s.op for s in graph.skipped]
    assert ops_skipped == ["aten::fft_fft"]
    assert "aten::fft_fft" not in supported_ops()


def test_every_family_module_registers_handlers_that_supported_ops_lists() -> None:
    families = {m.name for m in pkgutil.iter_modules(ops.__path__) if not m.name.startswith("_")}
    assert families == {m.__name__.rsplit(".", 1)[1] for m in ops.FAMILIES}
    by_module: dict[str, set[str]] = {}
    for name, fn in HANDLERS.items():
        by_module.setdefault(fn.__module__, set()).add(name)
    listed = set(supported_ops())
    for family in sorted(families):
        module = importlib.import_module(f"netsculpt.graph.ops.{family}")
        names = by_module.get(module.__name__, set())
        assert names, f"netsculpt.graph.ops.{family} registers no handler"
        assert names <= listed
