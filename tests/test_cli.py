"""The netsculpt command line, run in-process with typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.cli import app

runner = CliRunner()


def tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    return model.eval(), torch.randn(2, 3, 8, 8)


SPEC = "test_cli:tiny"


def test_help_everywhere() -> None:
    for cmd in (
        [],
        ["analyze"],
        ["prune"],
        ["measure"],
        ["export"],
        ["demo"],
        ["search"],
        ["pareto"],
        ["report"],
    ):
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0, (cmd, result.output)
        assert "Usage" in result.output


def test_analyze_lists_groups() -> None:
    result = runner.invoke(app, ["analyze", SPEC])
    assert result.exit_code == 0, result.output
    assert "prunable" in result.output and "protected" in result.output


def test_prune_saves_a_folder_that_measure_and_export_accept(tmp_path: Path) -> None:
    out = tmp_path / "small"
    result = runner.invoke(app, ["prune", SPEC, "--ratio", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "16 -> 8" in result.output
    again = ns.load(out, trust_code=True)
    assert call_model(again, tiny()[1]).shape == (2, 3)
    result = runner.invoke(app, ["measure", str(out), "--repeats", "3", "--trust-code"])
    assert result.exit_code == 0, result.output
    assert "latency" in result.output
    result = runner.invoke(
        app, ["export", str(out), "--out", str(tmp_path / "onnx"), "--onnx", "--trust-code"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    # the re-exported folder keeps the factory of the folder it came from
    assert json.loads((tmp_path / "onnx" / "netsculpt.json").read_text())["base"] == {
        "kind": "factory",
        "factory": SPEC,
    }


def _saved_tiny(folder: Path) -> Path:
    model, x = tiny()
    ns.save(ns.prune(model, x, ratio=0.5), folder, base_factory=SPEC, example_inputs=x)
    return folder


def test_folder_factory_needs_trust_code(tmp_path: Path) -> None:
    out = _saved_tiny(tmp_path / "small")
    for command in (["measure", str(out), "--repeats", "3"], ["analyze", str(out)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith("UntrustedCodeError: ")
        assert "test_cli:tiny" in lines[0] and "--trust-code" in lines[0]
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["analyze", str(out), "--trust-code"])
    assert result.exit_code == 0, result.output
    assert "prunable" in result.output


def test_hostile_folder_is_one_line_error(tmp_path: Path) -> None:
    out = _saved_tiny(tmp_path / "small")
    manifest = json.loads((out / "netsculpt.json").read_text())
    manifest["base"] = {"kind": "factory", "factory": "os:abort"}
    (out / "netsculpt.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["measure", str(out), "--repeats", "3"])
    assert result.exit_code == 2
    assert result.output.startswith("UntrustedCodeError: ") and "'os:abort'" in result.output
    (out / "netsculpt.json").write_text("[/bold red] [" * 3)
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.startswith("SaveLoadError: ") and "not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_builtin_folder_loads_without_trust(tmp_path: Path) -> None:
    from netsculpt.tasks.digits import DigitsCNN

    torch.manual_seed(0)
    out = tmp_path / "digits"
    ns.save(
        DigitsCNN().eval(),
        out,
        base_factory="netsculpt.tasks.digits:DigitsCNN",
        example_inputs=torch.randn(2, 1, 8, 8),
    )
    result = runner.invoke(app, ["measure", str(out), "--repeats", "3"])
    assert result.exit_code == 0, result.output
    assert "latency" in result.output


def test_bad_input_exits_with_a_named_error() -> None:
    result = runner.invoke(app, ["prune", SPEC, "--ratio", "1.5"])
    assert result.exit_code == 2
    assert "InvalidRatioError" in result.output
    result = runner.invoke(app, ["analyze", "no_such_module_xyz:f"])
    assert result.exit_code == 2
    assert "FactoryError" in result.output
    result = runner.invoke(app, ["prune", SPEC, "--importance", "psychic"])
    assert result.exit_code == 2
    assert "UnknownNameError" in result.output


def test_extending_doc_importance_example_runs() -> None:
    @ns.register_importance("first_weight_l1")
    def first_weight_l1(group, ctx):  # type: ignore[no-untyped-def]
        slot = group.slots[0]
        w = ctx.tensor(slot.tensor).abs()
        per_position = w.movedim(slot.dim, 0).reshape(w.shape[slot.dim], -1).sum(1).numpy()
        _leaf, unit_of_position = ctx.graph.index_map(slot.tensor, slot.dim)[group.uid]
        ok = unit_of_position >= 0
        return np.bincount(unit_of_position[ok], per_position[ok], minlength=group.size)

    model, x = tiny()
    plan = ns.plan(model, x, ratio=0.5, importance="first_weight_l1")
    assert plan.widths["0"] == (16, 8)
