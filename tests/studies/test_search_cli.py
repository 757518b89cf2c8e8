"""The search commands (search, pareto, export, report) and the model-spec resolver."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli._output import print_table
from netsculpt.cli.studies import app, front_table, resolve_model
from netsculpt.errors import FactoryError
from netsculpt.measurement.api import count_params
from netsculpt.studies.front import Front

HERE = Path(__file__).parent


def test_resolve_model_accepts_factories_and_files() -> None:
    model, x = resolve_model("search_helpers:tiny_mlp")
    assert isinstance(model, torch.nn.Module) and x.shape == (8, 12)
    again, _ = resolve_model(f"{HERE / 'search_helpers.py'}:tiny_mlp")
    assert count_params(again) == count_params(model)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "empty"),
        ("resnet50", "neither a built-in name"),
        ("no_such_module_xyz:build", "could not be imported"),
        ("search_helpers:nothing_here", "no callable 'nothing_here'"),
        ("search_helpers:DENSE_PARAMS", "no callable"),
        ("search_helpers:tiny_inputs", "not (nn.Module, example_inputs)"),
        ("/no/such/file.py:build", "does not exist"),
    ],
)
def test_resolve_model_rejects_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(FactoryError) as info:
        resolve_model(spec)
    assert words in str(info.value)


def test_search_pareto_export_report_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    result = runner.invoke(
        app,
        [
            "search",
            "search_helpers:tiny_mlp",
            "--task",
            "search_helpers:WidthTask",
            "--trials",
            "4",
            "--storage",
            storage,
            "--study",
            "cli",
            "--sampler",
            "random",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "study cli" in result.output and "dense" in result.output
    # the knee is timed against the dense model, runs interleaved, with the spread
    knee_line = next(line for line in result.output.splitlines() if line.startswith("knee"))
    assert "vs dense, latency" in knee_line and "interleaved" in knee_line
    assert "p10-p90" in knee_line
    assert any(word in knee_line for word in ("faster", "slower", "as fast"))

    result = runner.invoke(app, ["pareto", "--study", "cli", "--storage", storage])
    assert result.exit_code == 0, result.output
    front = Front.load(storage, "cli")
    assert len(front.completed) == 4
    assert "knee" in result.output
    for t in front.trials:
        assert f"{t.params:,}" in result.output

    knee = front.knee()
    out = tmp_path / "knee"
    export = ["export", "--study", "cli", "--storage", storage, "--out", str(out), "--onnx"]
    # the study names its model factory: data, not run without the user's word
    result = runner.invoke(app, export)
    assert result.exit_code == 2
    assert "UntrustedCodeError" in result.output and "--trust-code" in result.output
    assert not out.exists()
    with pytest.raises(ns.UntrustedCodeError, match="search_helpers:tiny_mlp"):
        _ = knee.model
    # ... the user names the model, or trusts the study
    result = runner.invoke(app, [*export, "--model", "search_helpers:tiny_mlp"])
    assert result.exit_code == 0, result.output
    assert f"trial {knee.number}" in result.output
    assert (out / "model.onnx").is_file()
    loaded = ns.load(out, trust_code=True)  # the folder names search_helpers:tiny_mlp
    assert count_params(loaded) == knee.params
    trusted = Front.load(storage, "cli", trust_code=True)
    x = trusted.example_inputs()
    torch.testing.assert_close(loaded(x), trusted.trial(knee.number).model(x))
    again = tmp_path / "again"
    result = runner.invoke(app, [*export[:5], "--out", str(again), "--trust-code"])
    assert result.exit_code == 0, result.output
    assert count_params(ns.load(again, trust_code=True)) == knee.params

    page = tmp_path / "report.html"
    result = runner.invoke(
        app, ["report", "--study", "cli", "--storage", storage, "--out", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert page.is_file() and "netsculpt-front" in page.read_text()


def test_commands_report_errors_with_exit_code_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    result = runner.invoke(app, ["pareto", "--study", "missing", "--storage", storage])
    assert result.exit_code == 2
    assert "no study 'missing'" in result.output
    result = runner.invoke(
        app,
        [
            *("search", "nope", "--task", "search_helpers:WidthTask"),
            *("--trials", "2", "--storage", storage, "--no-progress"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("FactoryError: ") and result.output.count("\n") == 1
    # a model that is not a built-in needs --task; nothing is started without it
    fresh = tmp_path / "fresh.db"
    result = runner.invoke(
        app, ["search", "search_helpers:tiny_mlp", "--storage", f"sqlite:///{fresh}"]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "'search_helpers:tiny_mlp'" in result.output and "--task digits" in result.output
    assert "--task pkg.mod:make_task" in result.output
    assert not fresh.exists()
    result = runner.invoke(
        app,
        [
            "search",
            "search_helpers:tiny_mlp",
            "--task",
            "search_helpers:WidthTask",
            "--sampler",
            "grid",
            "--storage",
            storage,
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "unknown sampler 'grid'" in result.output


def _row(number: int | str, latency_ms: float) -> SimpleNamespace:
    return SimpleNamespace(
        number=number,
        score=0.9,
        test_score=0.88,
        latency_ms=latency_ms,
        latency_p90_ms=latency_ms * 1.1,
        params=12_345_678,
        macs=9_876_543_210,
    )


def test_front_table_words_a_slower_trial_and_keeps_numbers_whole() -> None:
    slow, fast = _row(3, 1.27), _row(4, 0.5)
    base = _row("dense", 1.0)
    front = SimpleNamespace(
        study_name="s",
        trials=[slow, fast],
        completed=[slow, fast],
        failed=[],
        baseline=base,
        knee=lambda: fast,
        speedup=lambda t: base.latency_ms / t.latency_ms,
    )
    out = io.StringIO()
    print_table(front_table(front), out=Console(file=out, width=60, color_system=None))
    text = out.getvalue()
    row3 = next(line for line in text.splitlines() if line.startswith("│     3"))
    assert "1.27x slower" in row3 and "12,345,678" in row3 and "9,876,543,210" in row3
    row4 = next(line for line in text.splitlines() if line.startswith("│     4"))
    assert "2.00x faster" in row4 and "knee" in row4
    assert "…" not in text and "not interleaved" in text
