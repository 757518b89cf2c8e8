"""A precision per layer recorded as data in the pruning plan: written, read back and
checked like the rest of the plan, replayed by ns.quantize on a model, a save folder and
the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli import app
from netsculpt.errors import PlanError
from netsculpt.export.save import BUILTIN_BASE_FACTORIES
from netsculpt.tasks.digits import DigitsTask

runner = CliRunner()


def _mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    return model.eval(), torch.randn(4, 8)


def test_precision_round_trips_composes_and_describes() -> None:
    model, x = _mlp()
    plan = ns.plan_of(ns.prune(model, x, ratio=0.5))
    assert plan is not None and plan.precision == () and plan.quantize_config is None
    config = ns.QuantizeConfig(mode="dynamic")
    mixed = plan.with_precision({"*": "int8", "4": "float"}, config)
    again = ns.Plan.from_json(mixed.to_json())
    assert again.precision == (("*", "int8"), ("4", "float"))
    assert again.quantize_config == ns.QuantizeConfig(mode="dynamic", float_layers=("4",))
    assert "4" in again.describe() and "float (ns.quantize)" in again.describe()
    # a later plan's precision wins layer by layer; its options replace the earlier ones
    later = ns.Plan(tensors={}, shapes={}).with_precision(
        {"4": "int8", "2": "float"}, ns.QuantizeConfig()
    )
    both = mixed.then(later)
    assert dict(both.precision) == {"*": "int8", "4": "int8", "2": "float"}
    assert both.quantize_config == ns.QuantizeConfig(float_layers=("2",))
    # replaying the plan keeps it on the model: ns.save writes it
    assert ns.plan_of(ns.apply(model, mixed)).precision == mixed.precision  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(precision=[["4", "int4"]]), r"precision\[0\]\[1\].*'int4'"),
        (lambda d: d.update(precision=[["4", "int8"], ["4", "float"]]), "listed twice"),
        (lambda d: d.update(precision=[["", "int8"]]), "empty"),
        (lambda d: d.update(precision="int8"), "precision"),
        (lambda d: d.update(quantize={"mode": "fp8"}), r"quantize.*'fp8'"),
        (lambda d: d.update(quantize={"module": "os:system"}), "quantize.*module"),
    ],
)
def test_stored_precision_is_checked_as_data(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    model, x = _mlp()
    plan = ns.plan_of(ns.prune(model, x, ratio=0.5))
    assert plan is not None
    data = json.loads(plan.with_precision({"*": "int8"}).to_json())
    edit(data)
    with pytest.raises(PlanError, match=message):
        ns.Plan.from_json(json.dumps(data))


def test_bad_precision_is_refused_before_anything_changes() -> None:
    model, x = _mlp()
    plan = ns.plan_of(ns.prune(model, x, ratio=0.5))
    assert plan is not None
    with pytest.raises(PlanError, match="'fp16'"):
        plan.with_precision({"*": "fp16"})
    with pytest.raises(PlanError, match="QuantizeConfig"):
        plan.with_precision({"*": "int8"}, {"mode": "dynamic"})
    with pytest.raises(PlanError, match="'head'.*does not have"):
        ns.apply(model, plan.with_precision({"head": "float"}))
    with pytest.raises(PlanError, match="no int8 layer"):
        _ = plan.with_precision({"*": "float"}).quantize_config


def test_quantize_follows_the_plan_of_a_model_and_of_a_save_folder(tmp_path: Path) -> None:
    task = DigitsTask()
    model = task.pretrained_model()
    x = task.example_inputs()
    plan = ns.plan_of(ns.prune(model, x, ratio=0.2))
    assert plan is not None
    small = ns.apply(
        model, plan.with_precision({"*": "int8", "fc": "float"}, ns.QuantizeConfig(calib_batches=2))
    )
    q = ns.quantize(small, x, calib=task)  # no config: the plan's
    assert q.config.mode == "static" and q.calib_batches_used == 2
    assert {c.module: c.reason for c in q.kept_float} == {
        "fc": "kept in float by float_layers entry 'fc'"
    }
    # options given by the caller win; the plan's float layers still stay float
    dynamic = ns.quantize(small, x, ns.QuantizeConfig(mode="dynamic"))
    assert dynamic.config.mode == "dynamic" and dynamic.config.float_layers == ("fc",)
    folder = ns.save(
        small, tmp_path / "small", base_factory=BUILTIN_BASE_FACTORIES["digits"], example_inputs=x
    )
    saved = json.loads((folder / "plan.json").read_text())
    assert saved["precision"] == [["*", "int8"], ["fc", "float"]]
    listing = sorted(p.name for p in folder.iterdir())
    from_folder = ns.quantize(folder, x, calib=task, path=tmp_path / "q.onnx")
    assert [c.module for c in from_folder.kept_float] == ["fc"]
    assert task.evaluate(from_folder.as_module()) == pytest.approx(task.evaluate(q.as_module()))
    assert sorted(p.name for p in folder.iterdir()) == listing  # the folder is untouched
    # the command line reads the mode, calibration and float layers from the saved plan
    out = tmp_path / "cli.int8.onnx"
    result = runner.invoke(app, ["quantize", str(folder), "--task", "digits", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["config"]["float_layers"] == ["fc"] and recipe["config"]["calib_batches"] == 2


def test_dynamic_mode_keeps_a_gemm_layer_float() -> None:
    # onnxruntime's dynamic quantizer splits a Gemm into <name>_MatMul + <name>_Add before
    # it reads the exclusions: the layer kept float must stay float under its new name
    import onnx

    model, x = _mlp()
    q = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic", float_layers=("2",)))
    by_module = {c.module: c for c in q.layers}
    assert not by_module["2"].quantized and by_module["0"].quantized and by_module["4"].quantized
    integer = [n.name for n in onnx.load(str(q.path)).graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 2 and not any(n.startswith(by_module["2"].node + "_") for n in integer)
    torch.testing.assert_close(torch.as_tensor(q.run(x)), model(x).detach(), atol=0.1, rtol=0.1)


def test_keeping_float_adds_each_layer_once() -> None:
    config = ns.QuantizeConfig(float_layers=("fc",))
    assert config.keeping_float(("head", "fc", "head")).float_layers == ("fc", "head")
    assert config.keeping_float(()) is config
