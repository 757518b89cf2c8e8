"""The netsculpt command line, run in-process with typer's CliRunner."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.cli import app
from netsculpt.cli._output import LatencySpread, print_table, speed_words
from netsculpt.measurement import api as measurement_api

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


# --------------------------------------------------------------------------- search --task


def _one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_search_needs_a_task_for_a_model_that_is_not_built_in(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    result = runner.invoke(
        app, ["search", SPEC, "--trials", "2", "--storage", f"sqlite:///{db}", "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    line = _one_line(result.output)
    assert line.startswith("InputError: ")
    assert f"'{SPEC}'" in line and "--task digits" in line and "--task pkg.mod:make_task" in line
    assert not db.exists()  # refused before anything was started


def test_search_of_a_built_in_model_uses_its_own_task(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_search(model: Any, **options: Any) -> Any:
        seen.update(options, model=model)
        raise ns.SearchError("stopped here by the test\nafter a line break")

    monkeypatch.setattr("netsculpt.studies.api.search", fake_search)
    result = runner.invoke(app, ["search", "digits", "--trials", "2", "--no-progress"])
    assert seen["model"] == "digits" and seen["task"] == "digits"
    assert result.exit_code == 2
    assert _one_line(result.output) == "SearchError: stopped here by the test after a line break"
    # an explicit --task wins
    result = runner.invoke(app, ["search", SPEC, "--task", "my.tasks:make", "--no-progress"])
    assert seen["model"] == SPEC and seen["task"] == "my.tasks:make"


def test_every_netsculpt_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    for command in (
        ["prune", SPEC, "--ratio", "1.5"],
        ["prune", SPEC, "--importance", "psychic"],
        ["measure", SPEC, "--backend", "abacus"],
        ["measure", SPEC, "--repeats", "0"],
        ["analyze", "no_such_module_xyz:f"],
        ["export", str(tmp_path), "--out", str(tmp_path / "x")],
        ["pareto", "--study", "missing", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        name = _one_line(result.output).split(":")[0]
        assert name.endswith("Error") and hasattr(ns, name), (command, result.output)


# --------------------------------------------------------------------------- latency


def _fake_runs(medians: Mapping[str, float]) -> Any:
    """An interleaved_latency stand-in: 50 runs per model around the given medians."""

    def fake(models: Mapping[str, nn.Module], example_inputs: Any, **options: Any) -> Any:
        assert set(models) == set(medians)
        return {name: [medians[name] * (0.9 + 0.2 * i / 49) for i in range(50)] for name in models}

    return fake


def test_prune_words_a_slowdown_as_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        measurement_api, "interleaved_latency", _fake_runs({"original": 1.0, "pruned": 1.27})
    )
    result = runner.invoke(app, ["prune", SPEC, "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert "latency 1.27x slower" in result.output
    assert "faster" not in result.output
    # medians with their p10-p90 spread, in the table and in the sentence
    assert "p10-p90" in result.output
    assert "1.000 ms (p10-p90 0.920-1.080) -> 1.270 ms (p10-p90 1.168-1.372)" in result.output
    assert "interleaved" in result.output


def test_prune_words_a_speed_up_as_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        measurement_api, "interleaved_latency", _fake_runs({"original": 2.0, "pruned": 0.5})
    )
    result = runner.invoke(app, ["prune", SPEC, "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert "latency 4.00x faster" in result.output and "slower" not in result.output
    assert "may be noise" not in result.output


def test_prune_says_when_the_difference_may_be_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        measurement_api, "interleaved_latency", _fake_runs({"original": 1.0, "pruned": 0.95})
    )
    result = runner.invoke(app, ["prune", SPEC, "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert "1.05x faster" in result.output and "may be noise" in result.output


def test_measure_prints_the_median_and_the_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake(models: Mapping[str, nn.Module], example_inputs: Any, **options: Any) -> Any:
        calls.append(options)
        return {name: [2.0, 1.0, 3.0, 4.0, 5.0] for name in models}

    monkeypatch.setattr(measurement_api, "interleaved_latency", fake)
    result = runner.invoke(app, ["measure", SPEC, "--repeats", "5"])
    assert result.exit_code == 0, result.output
    assert "median ms" in result.output and "p10-p90 ms" in result.output
    row = next(line for line in result.output.splitlines() if SPEC in line)
    assert "3.000" in row and "1.400-4.600" in row
    assert calls == [{"backend": "torch", "rounds": 1, "repeats": 5, "warmup": 5, "threads": None}]


def test_speed_words() -> None:
    assert speed_words(2.0, 1.0) == "2.00x faster"
    assert speed_words(1.0, 1.27) == "1.27x slower"
    assert speed_words(1.0, 1.001) == "as fast (1.00x)"
    assert speed_words(1.0, 0.0) == "speed not measured"
    a = LatencySpread.of([1.0, 1.1, 1.2])
    assert a.median == pytest.approx(1.1) and a.runs == 3
    assert a.overlaps(LatencySpread.of([1.15, 1.3])) and not a.overlaps(LatencySpread.of([2.0]))


# --------------------------------------------------------------------------- wide tables


def wide() -> tuple[nn.Module, torch.Tensor]:
    """A model whose counts run to seven digits, with a long module name."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("a_rather_long_projection_layer_name", nn.Linear(1500, 1500))
    model.add_module("act", nn.ReLU())
    model.add_module("head", nn.Linear(1500, 10))
    return model.eval(), torch.randn(2, 1500)


WIDE = "test_cli:wide"
WIDE_PARAMS = 1500 * 1500 + 1500 + 1500 * 10 + 10  # 2,266,510


def test_piped_tables_keep_every_number_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measurement_api, "interleaved_latency", _fake_runs({WIDE: 123.456789}))
    narrow = CliRunner(env={"COLUMNS": "60"})
    result = narrow.invoke(app, ["measure", WIDE, "--repeats", "3"])
    assert result.exit_code == 0, result.output
    macs = ns.count_macs(wide()[0], wide()[1])
    row = next(line for line in result.output.splitlines() if WIDE in line)
    # one row, one line: every number whole, nothing cut with an ellipsis
    assert f"{WIDE_PARAMS:,}" in row and f"{macs:,}" in row and "123.457" in row
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) > 60

    monkeypatch.setattr(
        measurement_api,
        "interleaved_latency",
        _fake_runs({"original": 123.456789, "pruned": 65.4321}),
    )
    result = narrow.invoke(app, ["prune", WIDE, "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert f"{WIDE_PARAMS:,}" in result.output and "…" not in result.output
    pruned = next(line for line in result.output.splitlines() if "│ pruned" in line)
    assert "65.432" in pruned

    result = narrow.invoke(app, ["analyze", WIDE])
    assert result.exit_code == 0, result.output
    assert "1,500" in result.output and "…" not in result.output
    assert "a_rather_long_projection_layer_name" in result.output


def test_a_narrow_terminal_folds_text_but_never_cuts_numbers() -> None:
    table = Table(title="counts")
    table.add_column("model")
    for col in ("params", "MACs", "median ms"):
        table.add_column(col, justify="right")
    table.add_row("a_model_with_a_long_name_that_cannot_fit", "123,456,789", "9,876,543,210", "1.5")
    out = io.StringIO()
    print_table(table, out=Console(file=out, width=40, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert "123,456,789" in text and "9,876,543,210" in text and "…" not in text
    # the text column folds onto several lines instead of being cut
    assert "a_model" in text and "fit" in text
