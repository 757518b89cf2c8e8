"""`netsculpt search --precision`, the precision column of `pareto`, and `export` of an int8
trial: model.int8.onnx, and its test score checked against the search's validation score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from precision_helpers import AgreementTask
from typer.testing import CliRunner

from netsculpt.cli.studies import app
from netsculpt.studies.front import Front

TASK = "precision_helpers:AgreementTask"
MODEL = "search_helpers:tiny_mlp"


def _search(storage: str, study: str, *extra: str) -> Any:
    return CliRunner().invoke(
        app,
        [
            *("search", MODEL, "--task", TASK, "--storage", storage, "--study", study),
            *("--sampler", "random", "--seed", "3", "--recover-budget", "none"),
            *("--tie", "uniform", "--min-keep", "0.5", "--no-progress"),
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    storage = f"sqlite:///{tmp_path_factory.mktemp('precision-cli') / 'cli.db'}"
    result = _search(
        storage, "joint", "--trials", "4", "--precision", "float,int8", "--start-from-largest"
    )
    return storage, result


def test_search_precision_defaults_to_onnxruntime(study: tuple[str, Any]) -> None:
    storage, result = study
    assert result.exit_code == 0, result.output
    front = Front.load(storage, "joint")
    assert front.backend == "onnxruntime"
    assert front.config.space.precision == ("float", "int8")
    assert front.config.space.quantize is None  # static: the default QuantizeConfig
    assert {t.quantized for t in front.completed} == {False, True}
    assert front.config.start_from_largest
    first = sorted(front.completed, key=lambda t: t.number)[:2]  # the unpruned model, twice
    assert [(t.params_dict["keep"], t.quantized) for t in first] == [(1.0, False), (1.0, True)]
    assert "precision" in result.output and "study joint saved" in result.output
    knee = front.knee()
    assert f"knee (trial {knee.number}{', int8' if knee.quantized else ''}) vs dense" in (
        result.output
    )


def test_pareto_shows_the_precision_column(study: tuple[str, Any]) -> None:
    storage, _ = study
    result = CliRunner().invoke(app, ["pareto", "--study", "joint", "--storage", storage, "--all"])
    assert result.exit_code == 0, result.output
    front = Front.load(storage, "joint")
    header = next(line for line in result.output.splitlines() if "val score" in line)
    assert "precision" in header and header.index("precision") < header.index("val score")
    rows = [line for line in result.output.splitlines() if "int8 (static)" in line]
    assert len(rows) == sum(t.quantized for t in front.completed)


def _written_score(path: Path, split: str) -> float:
    """The score of the ONNX file on disk, run by onnxruntime directly."""
    task = AgreementTask()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = task.inputs[split].numpy()
    outs = [session.run(None, {name: x[i : i + 8]})[0] for i in range(0, len(x), 8)]
    agree = np.concatenate(outs).argmax(-1) == task.labels[split].numpy()
    return float(agree.mean())


def test_export_of_an_int8_trial_writes_and_checks_the_int8_model(
    study: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, _ = study
    front = Front.load(storage, "joint")
    trial = next(t for t in front.completed if t.quantized)
    out = tmp_path / "int8"
    export = ["export", "--study", "joint", "--storage", storage, "--trial", str(trial.number)]
    result = CliRunner().invoke(
        app, [*export, "--out", str(out), "--model", MODEL, "--trust-code", "--tolerance", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.int8.onnx").is_file() and (out / "model.int8.json").is_file()
    assert any(out.glob("*.safetensors"))  # the float sub-network, as for any trial
    check = json.loads((out / "model.int8.check.json").read_text())
    assert check["trial"] == trial.number and check["validation_score"] == trial.score
    assert check["test_score"] == pytest.approx(_written_score(out / "model.int8.onnx", "test"))
    assert check["tolerance"] == 1.0 and check["within_tolerance"] is True
    line = next(x for x in result.output.splitlines() if x.startswith("int8 model:"))
    assert (
        f"val score {trial.score:.4f}" in line and f"test score {check['test_score']:.4f}" in line
    )
    assert f"gap {check['gap']:+.4f}" in line and "within the tolerance" in line

    # a gap beyond the tolerance is reported once, as a line; the files stay; exit code 0
    real = AgreementTask.evaluate
    monkeypatch.setattr(
        AgreementTask,
        "evaluate",
        lambda self, m, split="validation": real(self, m, split) - 0.5 * (split == "test"),
    )
    far = tmp_path / "far"
    result = CliRunner().invoke(
        app, [*export, "--out", str(far), "--model", MODEL, "--trust-code", "--tolerance", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("BEYOND the tolerance") == 1
    assert "Warning" not in result.output and "Traceback" not in result.output
    assert json.loads((far / "model.int8.check.json").read_text())["within_tolerance"] is False
    assert (far / "model.int8.onnx").is_file()


def test_export_of_a_float_trial_writes_no_int8_model(
    study: tuple[str, Any], tmp_path: Path
) -> None:
    storage, _ = study
    trial = next(t for t in Front.load(storage, "joint").completed if not t.quantized)
    out = tmp_path / "float"
    result = CliRunner().invoke(
        app,
        [
            *("export", "--study", "joint", "--storage", storage, "--trial", str(trial.number)),
            *("--out", str(out), "--model", MODEL),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_dir() and not (out / "model.int8.onnx").exists()
    assert "int8 model:" not in result.output


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--precision", "float,fp8"), "'fp8'"),
        (("--precision", "float,int8", "--backend", "torch"), "onnxruntime"),
        (("--precision", "int8", "--quantize-mode", "fp8"), "'fp8'"),
    ],
)
def test_bad_precision_options_exit_2_with_one_line(
    tmp_path: Path, extra: tuple[str, ...], words: str
) -> None:
    db = tmp_path / "bad.db"
    result = _search(f"sqlite:///{db}", "bad", "--trials", "2", *extra)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert words in result.output
    assert not db.exists()  # nothing was started


def test_int8_only_dynamic_search_times_the_int8_knee(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'int8.db'}"
    result = _search(
        storage, "int8", "--trials", "2", "--precision", "int8", "--quantize-mode", "dynamic"
    )
    assert result.exit_code == 0, result.output
    front = Front.load(storage, "int8")
    assert front.completed and all(t.quantized for t in front.completed)
    assert all(t.quantize.mode == "dynamic" for t in front.completed)
    knee = front.knee()
    line = next(x for x in result.output.splitlines() if x.startswith("knee"))
    assert line.startswith(f"knee (trial {knee.number}, int8) vs dense") and "onnxruntime" in line
