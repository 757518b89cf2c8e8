"""Bad calls to the core entry points, table-driven: each raises a NetsculptError subclass
whose message names the bad value.

Covers analyze, plan, prune (copy and in place), measure, compare_latency, count_macs,
count_params, export_onnx, factorize and iterative_prune. Models are a few Linear layers, so
the whole table runs in seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    ExampleInputsError,
    ExportError,
    InputError,
    InvalidRatioError,
    NetsculptError,
    NothingToPruneError,
    UnknownNameError,
)
from netsculpt.pruning.lowrank import FactorizeConfig


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    ).eval()


def wide() -> nn.Sequential:
    """Hidden widths of 64 and 128, for factorisation."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()


def with_value(value: float) -> nn.Sequential:
    model = mlp()
    with torch.no_grad():
        model[2].weight[3, 5] = value
    return model


def on_meta() -> nn.Sequential:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


X = torch.randn(2, 8)
X_NAN = torch.tensor([[float("nan")] * 8, [0.0] * 8])
X_INF = torch.full((2, 8), float("inf"))
X_META = torch.empty(2, 8, device="meta")


class Tiny(ns.Task):
    """Enough of a task for argument checks (never trained on here)."""

    name = "tiny"

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        return 0.0

    def example_inputs(self) -> torch.Tensor:
        return X

    def train_batches(self, *, batch_size: int = 8, seed: int = 0) -> Iterator[Any]:
        while True:
            yield torch.randn(batch_size, 8), torch.randint(0, 4, (batch_size,))


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Path], Any]
    error: type[NetsculptError]
    fragment: str


def _file_in(tmp: Path) -> Path:
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return blocker


CASES = [
    # ---------------------------------------------------------------- analyze
    Case("analyze-str-model", lambda t: ns.analyze("resnet18", X), InputError, "'resnet18'"),
    Case("analyze-none-model", lambda t: ns.analyze(None, X), InputError, "got NoneType"),
    Case("analyze-meta-model", lambda t: ns.analyze(on_meta(), X), InputError, "meta device"),
    Case("analyze-nan-inputs", lambda t: ns.analyze(mlp(), X_NAN), ExampleInputsError, "NaN"),
    Case("analyze-meta-inputs", lambda t: ns.analyze(mlp(), X_META), ExampleInputsError, "meta"),
    Case("analyze-none-inputs", lambda t: ns.analyze(mlp(), None), ExampleInputsError, "None"),
    Case("analyze-str-inputs", lambda t: ns.analyze(mlp(), "x"), ExampleInputsError, "got str"),
    Case("analyze-exclude-int", lambda t: ns.analyze(mlp(), X, exclude=5), InputError, "got 5"),
    Case(
        "analyze-exclude-unknown",
        lambda t: ns.analyze(mlp(), X, exclude=["layer9"]),
        InputError,
        "'layer9', which matches no module",
    ),
    Case(
        "analyze-exclude-bad-regex",
        lambda t: ns.analyze(mlp(), X, exclude=["re:("]),
        InputError,
        "'re:(' is not a valid regular expression",
    ),
    Case(
        "analyze-timeout-zero",
        lambda t: ns.analyze(mlp(), X, timeout_s=0),
        InputError,
        "timeout_s must be positive, got 0",
    ),
    Case(
        "analyze-timeout-str",
        lambda t: ns.analyze(mlp(), X, timeout_s="10"),
        InputError,
        "timeout_s must be a number, got '10'",
    ),
    Case(
        "analyze-on-unsupported",
        lambda t: ns.analyze(mlp(), X, on_unsupported="ignore"),
        InputError,
        "'ignore'",
    ),
    Case(
        "analyze-protect-outputs-str",
        lambda t: ns.analyze(mlp(), X, protect_outputs="yes"),
        InputError,
        "protect_outputs must be True or False, got 'yes'",
    ),
    # ---------------------------------------------------------------- plan
    Case("plan-str-model", lambda t: ns.plan("mlp", X), InputError, "'mlp'"),
    Case("plan-nan-weights", lambda t: ns.plan(with_value(float("nan")), X), InputError, "NaN"),
    Case(
        "plan-inf-weights",
        lambda t: ns.plan(with_value(float("inf")), X),
        InputError,
        "infinite weights: '2.weight'",
    ),
    Case("plan-inf-inputs", lambda t: ns.plan(mlp(), X_INF), ExampleInputsError, "infinite"),
    Case("plan-meta-model", lambda t: ns.plan(on_meta(), X), InputError, "meta device"),
    Case(
        "config-seed-str",
        lambda t: ns.PruneConfig(seed="x"),
        InputError,
        "seed must be an integer, got 'x'",
    ),
    Case("config-seed-negative", lambda t: ns.PruneConfig(seed=-1), InputError, "got -1"),
    Case("config-exclude-int", lambda t: ns.PruneConfig(exclude=5), InputError, "(exclude=5)"),
    Case(
        "config-exclude-bad-regex",
        lambda t: ns.PruneConfig(exclude=("re:(",)),
        InputError,
        "'re:(' is not a valid regular expression",
    ),
    Case(
        "plan-exclude-misspelt",
        lambda t: ns.plan(mlp(), X, ns.PruneConfig(exclude=("2.wieght",))),
        InputError,
        "did you mean '2.weight'",
    ),
    Case(
        "plan-config-a-number",
        lambda t: ns.plan(mlp(), X, 0.3),
        InputError,
        "to set the ratio alone, pass ratio=0.3",
    ),
    Case(
        "plan-config-a-dict",
        lambda t: ns.plan(mlp(), X, {"ratio": 0.3}),
        InputError,
        "ns.PruneConfig.from_dict",
    ),
    Case(
        "config-unknown-field",
        lambda t: ns.PruneConfig.from_dict({"ratoi": 0.3}),
        InputError,
        "no field 'ratoi'; did you mean 'ratio'?",
    ),
    Case(
        "config-ratio-empty-mapping",
        lambda t: ns.PruneConfig(ratio={}),
        InputError,
        "an empty mapping prunes nothing",
    ),
    Case("plan-ratio-one", lambda t: ns.plan(mlp(), X, ratio=1.0), InvalidRatioError, "got 1.0"),
    Case("plan-ratio-str", lambda t: ns.plan(mlp(), X, ratio="0.3"), InvalidRatioError, "'0.3'"),
    Case(
        "plan-ratio-nan",
        lambda t: ns.plan(mlp(), X, ratio=float("nan")),
        InvalidRatioError,
        "got nan",
    ),
    Case(
        "plan-ratio-key-int",
        lambda t: ns.plan(mlp(), X, ratio={0: 0.5}),
        InputError,
        "got 0 (int)",
    ),
    Case(
        "plan-ratio-key-unknown",
        lambda t: ns.plan(mlp(), X, ratio={"fc9": 0.5}),
        InputError,
        "ratio key 'fc9' matches no prunable group",
    ),
    Case(
        "plan-importance-unknown",
        lambda t: ns.plan(mlp(), X, importance="psychic"),
        UnknownNameError,
        "'psychic'",
    ),
    Case(
        "plan-importance-int",
        lambda t: ns.plan(mlp(), X, importance=5),
        InputError,
        "importance is a criterion name (str)",
    ),
    Case(
        "plan-importance-callable",
        lambda t: ns.plan(mlp(), X, importance=lambda g, ctx: None),
        InputError,
        "register it with ns.register_importance(name)",
    ),
    Case(
        "config-importance-unknown",
        lambda t: ns.PruneConfig(importance="psychic"),
        UnknownNameError,
        "register yours first with ns.register_importance('psychic')",
    ),
    Case("config-round-to-zero", lambda t: ns.PruneConfig(round_to=0), InputError, "got 0"),
    Case("config-round-to-float", lambda t: ns.PruneConfig(round_to=2.5), InputError, "2.5"),
    Case(
        "plan-round-to-wider-than-groups",
        lambda t: ns.plan(mlp(), X, ns.PruneConfig(ratio=0.5, round_to=64)),
        NothingToPruneError,
        "round_to=64 exceeds the width of every group",
    ),
    Case(
        "plan-ratio-below-one-unit",
        lambda t: ns.plan(mlp(), X, ratio=0.01),
        NothingToPruneError,
        "ratio=0.01 removes no unit",
    ),
    Case(
        "plan-everything-excluded",
        lambda t: ns.plan(mlp(), X, ns.PruneConfig(exclude=("re:.*",))),
        NothingToPruneError,
        "no prunable group",
    ),
    Case(
        "plan-taylor-without-calib",
        lambda t: ns.plan(mlp(), X, importance="taylor"),
        InputError,
        "'taylor' needs calibration batches",
    ),
    Case(
        "plan-calib-tensor",
        lambda t: ns.plan(mlp(), X, importance="taylor", calib=X),
        ExampleInputsError,
        "got one Tensor",
    ),
    Case(
        "plan-calib-int",
        lambda t: ns.plan(mlp(), X, importance="activation", calib=5),
        ExampleInputsError,
        "got 5 (int)",
    ),
    Case(
        "plan-calib-empty",
        lambda t: ns.plan(mlp(), X, importance="activation", calib=[]),
        ExampleInputsError,
        "calib is empty",
    ),
    Case(
        "plan-calib-batch-str",
        lambda t: ns.plan(mlp(), X, importance="activation", calib=["batch"]),
        ExampleInputsError,
        "calib[0] is str ('batch')",
    ),
    Case(
        "plan-calib-batch-nan",
        lambda t: ns.plan(mlp(), X, importance="taylor", calib=[X_NAN]),
        ExampleInputsError,
        "calib[0] holds NaN",
    ),
    Case("plan-loss-fn-str", lambda t: ns.plan(mlp(), X, loss_fn="mse"), InputError, "'mse'"),
    Case("plan-graph-str", lambda t: ns.plan(mlp(), X, graph="g"), InputError, "got str"),
    Case(
        "config-verify-str",
        lambda t: ns.PruneConfig(verify="yes"),
        InputError,
        "verify must be True or False, got 'yes'",
    ),
    Case(
        "config-global-ranking-int",
        lambda t: ns.PruneConfig(global_ranking=1),
        InputError,
        "global_ranking must be True or False",
    ),
    Case(
        "config-protect-outputs-none",
        lambda t: ns.PruneConfig(protect_outputs=None),
        InputError,
        "protect_outputs must be True or False, got None",
    ),
    Case(
        "config-remove-blocks-int",
        lambda t: ns.PruneConfig(remove_blocks=[3]),
        InputError,
        "got 3 (int)",
    ),
    Case(
        "plan-remove-blocks-unknown",
        lambda t: ns.plan(mlp(), X, ns.PruneConfig(remove_blocks=("2",))),
        InputError,
        "not removable blocks",
    ),
    # ---------------------------------------------------------------- prune
    Case("prune-none-model", lambda t: ns.prune(None, X), InputError, "got NoneType"),
    Case(
        "prune-config-str",
        lambda t: ns.prune(mlp(), X, "ratio=0.3"),
        InputError,
        "ns.prune takes a PruneConfig as its third argument, got 'ratio=0.3'",
    ),
    Case(
        "prune-inplace-str",
        lambda t: ns.prune(mlp(), X, inplace="yes"),
        InputError,
        "inplace must be True or False, got 'yes'",
    ),
    Case(
        "prune-inplace-nan-weights",
        lambda t: ns.prune(with_value(float("nan")), X, inplace=True),
        InputError,
        "NaN weights: '2.weight'",
    ),
    Case(
        "prune-inplace-round-to",
        lambda t: ns.prune(mlp(), X, ns.PruneConfig(ratio=0.5, round_to=64), inplace=True),
        NothingToPruneError,
        "round_to=64",
    ),
    Case(
        "prune-inplace-exclude-unknown",
        lambda t: ns.prune(mlp(), X, ns.PruneConfig(exclude=("nope",)), inplace=True),
        InputError,
        "'nope'",
    ),
    Case(
        "prune-ratio-shortcut-str",
        lambda t: ns.prune(mlp(), X, ns.PruneConfig(), ratio="x"),
        InvalidRatioError,
        "got 'x'",
    ),
    Case(
        "prune-taylor-shortcut-without-calib",
        lambda t: ns.prune(mlp(), X, importance="taylor", inplace=True),
        InputError,
        "'taylor' needs calibration batches",
    ),
    # ---------------------------------------------------------------- measure
    Case("measure-str-model", lambda t: ns.measure("mlp", X), InputError, "'mlp'"),
    Case("measure-meta-model", lambda t: ns.measure(on_meta(), X), InputError, "meta device"),
    Case("measure-nan-inputs", lambda t: ns.measure(mlp(), X_NAN), ExampleInputsError, "NaN"),
    Case(
        "measure-unknown-backend",
        lambda t: ns.measure(mlp(), X, backend="tensorrt"),
        UnknownNameError,
        "'tensorrt'",
    ),
    Case("measure-repeats-zero", lambda t: ns.measure(mlp(), X, repeats=0), InputError, "got 0"),
    Case(
        "measure-repeats-negative",
        lambda t: ns.measure(mlp(), X, repeats=-3),
        InputError,
        "got -3",
    ),
    Case("measure-warmup-negative", lambda t: ns.measure(mlp(), X, warmup=-1), InputError, "-1"),
    Case("measure-threads-zero", lambda t: ns.measure(mlp(), X, threads=0), InputError, "got 0"),
    Case(
        "measure-memory-str",
        lambda t: ns.measure(mlp(), X, memory="no"),
        InputError,
        "memory must be True or False, got 'no'",
    ),
    Case("compare-empty", lambda t: ns.compare_latency({}, X), InputError, "(empty)"),
    Case("compare-list", lambda t: ns.compare_latency([mlp()], X), InputError, "got list"),
    Case(
        "compare-str-model",
        lambda t: ns.compare_latency({"a": "m"}, X),
        InputError,
        "models['a'] must be a torch.nn.Module",
    ),
    Case(
        "compare-int-key",
        lambda t: ns.compare_latency({1: mlp()}, X),
        InputError,
        "got key 1",
    ),
    Case(
        "compare-rounds-zero",
        lambda t: ns.compare_latency({"a": mlp()}, X, rounds=0),
        InputError,
        "got 0",
    ),
    Case(
        "compare-nan-inputs",
        lambda t: ns.compare_latency({"a": mlp()}, X_NAN),
        ExampleInputsError,
        "NaN",
    ),
    Case("count-macs-none", lambda t: ns.count_macs(None, X), InputError, "got NoneType"),
    Case(
        "count-macs-meta-inputs", lambda t: ns.count_macs(mlp(), X_META), ExampleInputsError, "meta"
    ),
    Case("count-params-str", lambda t: ns.count_params("mlp"), InputError, "'mlp'"),
    # ---------------------------------------------------------------- export_onnx
    Case(
        "export-path-under-a-file",
        lambda t: ns.export_onnx(mlp(), X, _file_in(t) / "model.onnx"),
        ExportError,
        "a_file' is a file, not a folder",
    ),
    Case(
        "export-path-is-a-folder",
        lambda t: ns.export_onnx(mlp(), X, t),
        ExportError,
        "it is a folder",
    ),
    Case("export-path-int", lambda t: ns.export_onnx(mlp(), X, 5), InputError, "got 5 (int)"),
    Case(
        "export-unknown-exporter",
        lambda t: ns.export_onnx(mlp(), X, t / "m.onnx", exporter="tflite"),
        UnknownNameError,
        "'tflite'",
    ),
    Case(
        "export-opset-too-low",
        lambda t: ns.export_onnx(mlp(), X, t / "m.onnx", opset=3),
        InputError,
        "opset must be at least 7, got 3",
    ),
    Case(
        "export-atol-negative",
        lambda t: ns.export_onnx(mlp(), X, t / "m.onnx", atol=-1.0),
        InputError,
        "atol must be at least 0.0, got -1.0",
    ),
    Case(
        "export-check-str",
        lambda t: ns.export_onnx(mlp(), X, t / "m.onnx", check="yes"),
        InputError,
        "check must be True or False, got 'yes'",
    ),
    Case(
        "export-nan-weights",
        lambda t: ns.export_onnx(with_value(float("nan")), X, t / "m.onnx"),
        InputError,
        "NaN weights",
    ),
    Case("export-str-model", lambda t: ns.export_onnx("m", X, t / "m.onnx"), InputError, "'m'"),
    Case(
        "export-meta-inputs",
        lambda t: ns.export_onnx(mlp(), X_META, t / "m.onnx"),
        ExampleInputsError,
        "meta",
    ),
    # ---------------------------------------------------------------- factorize
    Case("factorize-str-model", lambda t: ns.factorize("m"), InputError, "'m'"),
    Case(
        "factorize-nan-weights",
        lambda t: ns.factorize(with_value(float("nan"))),
        InputError,
        "NaN weights",
    ),
    Case(
        "factorize-energy-high",
        lambda t: ns.factorize(wide(), energy=1.5),
        InvalidRatioError,
        "got 1.5",
    ),
    Case(
        "factorize-energy-str",
        lambda t: ns.factorize(wide(), energy="x"),
        InvalidRatioError,
        "got 'x'",
    ),
    Case(
        "factorize-modules-unknown",
        lambda t: ns.factorize(wide(), modules=["fc9"]),
        InputError,
        "'fc9', which matches no module",
    ),
    Case(
        "factorize-modules-int",
        lambda t: ns.factorize(wide(), modules=5),
        InputError,
        "got 5",
    ),
    Case(
        "factorize-config-str",
        lambda t: ns.factorize(wide(), "cfg"),
        InputError,
        "got 'cfg'",
    ),
    Case(
        "factorize-config-and-energy",
        lambda t: ns.factorize(wide(), FactorizeConfig(energy=0.9), energy=0.5),
        InputError,
        "not both",
    ),
    # ---------------------------------------------------------------- iterative_prune
    Case(
        "iterative-task-none",
        lambda t: ns.iterative_prune(mlp(), X, task=None, ratio=0.5),
        InputError,
        "task=None",
    ),
    Case(
        "iterative-task-name",
        lambda t: ns.iterative_prune(mlp(), X, task="digits", ratio=0.5),
        InputError,
        "task='digits' is a task name",
    ),
    Case(
        "iterative-ratio-high",
        lambda t: ns.iterative_prune(mlp(), X, task=Tiny(), ratio=1.2),
        InvalidRatioError,
        "got 1.2",
    ),
    Case(
        "iterative-ratio-zero",
        lambda t: ns.iterative_prune(mlp(), X, task=Tiny(), ratio=0.0),
        InputError,
        "ratio=0",
    ),
    Case(
        "iterative-steps-zero",
        lambda t: ns.iterative_prune(mlp(), X, task=Tiny(), ratio=0.5, steps=0),
        InputError,
        "got 0",
    ),
    Case(
        "iterative-budget-negative",
        lambda t: ns.iterative_prune(mlp(), X, task=Tiny(), ratio=0.5, budget_per_step=-5),
        InputError,
        "budget=-5",
    ),
    Case(
        "iterative-recovery-unknown",
        lambda t: ns.iterative_prune(mlp(), X, task=Tiny(), ratio=0.5, recovery="prune"),
        InputError,
        "'prune'",
    ),
    Case(
        "iterative-exclude-unknown",
        lambda t: ns.iterative_prune(
            mlp(), X, ns.PruneConfig(exclude=("nope",)), task=Tiny(), ratio=0.5
        ),
        InputError,
        "'nope'",
    ),
    Case(
        "iterative-config-str",
        lambda t: ns.iterative_prune(mlp(), X, "x", task=Tiny(), ratio=0.5),
        InputError,
        "ns.iterative_prune takes a PruneConfig as its third argument, got 'x'",
    ),
    Case(
        "iterative-nan-weights",
        lambda t: ns.iterative_prune(with_value(float("nan")), X, task=Tiny(), ratio=0.5),
        InputError,
        "NaN weights",
    ),
]


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_call_raises_a_clear_netsculpt_error(case: Case, tmp_path: Path) -> None:
    with pytest.raises(case.error, match=re.escape(case.fragment)) as info:
        case.call(tmp_path)
    assert isinstance(info.value, NetsculptError)


def test_a_bad_call_leaves_the_model_untouched() -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NothingToPruneError):
        ns.prune(model, X, ns.PruneConfig(ratio=0.5, round_to=64), inplace=True)
    assert model[0].out_features == 16
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_an_infinite_mask_buffer_is_not_a_nan_weight() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.b = nn.Linear(16, 4)
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x))) + self.mask.exp().sum()

    plan = ns.plan(Masked(), X, ratio=0.5)
    assert plan.widths["a"] == (16, 8)


def test_ratio_zero_still_gives_an_unchanged_plan() -> None:
    plan = ns.plan(mlp(), X, ratio=0.0)
    assert plan.is_identity
