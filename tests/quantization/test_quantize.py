"""ns.quantize: int8 through onnxruntime, its recipe, its bad inputs and its command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli import app
from netsculpt.export.save import BUILTIN_BASE_FACTORIES
from netsculpt.tasks.digits import DigitsTask

runner = CliRunner()


class Encoderish(nn.Module):
    """A transformer-encoder-shaped block: norm, MLP with a residual, a head (weight-heavy)."""

    def __init__(self, dim: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))
        return self.head(x)


@pytest.fixture(scope="module")
def encoderish() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Encoderish().eval(), torch.randn(2, 16, 128)


@pytest.fixture(scope="module")
def digits() -> tuple[DigitsTask, nn.Module]:
    task = DigitsTask()
    return task, task.pretrained_model()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_dynamic_on_an_encoder_block_is_close_and_smaller(
    encoderish: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = encoderish
    before = _state(model)
    config = ns.QuantizeConfig(mode="dynamic")
    q = ns.quantize(model, x, config, path=tmp_path / "enc.int8.onnx")
    assert _unchanged(model, before)
    assert {c.module for c in q.quantized} == {"up", "down", "head"}
    assert q.kept_float == ()
    with torch.no_grad():
        expected = model(x)
    got = q.run(x)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    # tolerance: 5 % of the output's scale (largest magnitude) in max abs difference
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, atol=0.05 * scale, rtol=0.0)
    bigger = torch.randn(5, 16, 128)  # another batch size runs too
    assert q.run(bigger).shape == (5, 16, 16)
    assert q.size_ratio > 2.0, (q.float_bytes, q.quantized_bytes)
    assert q.quantized_bytes == q.path.stat().st_size
    recipe = json.loads(q.path.with_suffix(".json").read_text())
    assert recipe == q.recipe
    assert recipe["config"]["mode"] == "dynamic" and recipe["preprocess"] == "ran"


def test_static_digits_cnn_keeps_accuracy(digits: tuple[DigitsTask, nn.Module]) -> None:
    task, model = digits
    before = _state(model)
    q = ns.quantize(model, task.example_inputs(), calib=task.calib_batches(8))
    assert _unchanged(model, before)
    assert q.calib_batches_used == 8 and q.config.mode == "static"
    assert len(q.quantized) == len(q.layers) == 7  # six convolutions and the classifier
    dense, int8 = task.evaluate(model, "test"), task.evaluate(q.as_module(), "test")
    assert int8 >= dense - 0.02, (dense, int8)
    assert q.size_ratio > 2.0


def test_pruned_model_quantizes_and_a_task_gives_calibration(
    digits: tuple[DigitsTask, nn.Module],
) -> None:
    task, model = digits
    x = task.example_inputs()
    small = ns.prune(model, x, ratio=0.3)
    config = ns.QuantizeConfig(calib_batches=2)
    q = ns.quantize(small, x, config, calib=task)  # a task: its calib_batches(2)
    assert q.calib_batches_used == 2
    assert q.quantized and q.kept_float == ()
    float_score = task.evaluate(small)  # pruned without fine-tuning: what int8 should keep
    assert task.evaluate(q.as_module()) >= float_score - 0.05, float_score


def test_float_layers_keep_the_named_layer_float(digits: tuple[DigitsTask, nn.Module]) -> None:
    task, model = digits
    x = task.example_inputs()
    config = ns.QuantizeConfig(float_layers=("fc", "re:block\\.conv1.*"), calib_batches=2)
    q = ns.quantize(model, x, config, calib=task.calib_batches(2))
    kept = {c.module: c.reason for c in q.kept_float}
    assert kept == {
        "fc": "kept in float by float_layers entry 'fc'",
        "block.conv1.0": "kept in float by float_layers entry 're:block\\\\.conv1.*'",
    }
    graph = onnx.load(str(q.path)).graph
    produced = {out: node.op_type for node in graph.node for out in node.output}
    fc = next(c for c in q.layers if c.module == "fc")
    node = next(n for n in graph.node if n.name == fc.node)
    assert node.op_type == "Gemm"
    assert produced.get(node.input[1]) != "DequantizeLinear"  # weight still float
    assert "model.fc.weight" in {t.name for t in graph.initializer}
    assert any(c.module == "stem.0" for c in q.quantized)


def test_an_onnx_file_is_read_never_written(
    encoderish: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = encoderish
    source = ns.export_onnx(model, x, tmp_path / "float.onnx")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    q = ns.quantize(source, x, ns.QuantizeConfig(mode="dynamic"), path=tmp_path / "q.onnx")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    assert q.float_bytes == source.stat().st_size and q.size_ratio > 2.0
    with pytest.raises(ns.InputError, match="never overwrites"):
        ns.quantize(source, x, ns.QuantizeConfig(mode="dynamic"), path=source)
    with pytest.raises(ns.InputError, match="folder"):
        ns.quantize(tmp_path, x, ns.QuantizeConfig(mode="dynamic"))


def test_config_round_trip_and_bad_values() -> None:
    config = ns.QuantizeConfig(
        mode="static",
        per_channel=False,
        calib_batches=3,
        calibration_method="percentile",
        op_types=["Conv"],
        float_layers=["fc"],
    )
    assert config.op_types == ("Conv",) and config.activation_type == "int8"
    assert ns.QuantizeConfig.from_json(config.to_json()) == config
    assert ns.QuantizeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ns.UnknownNameError, match="'dynamic', 'static'"):
        ns.QuantizeConfig(mode="int4")  # type: ignore[arg-type]
    with pytest.raises(ns.InputError, match="uint8 only"):
        ns.QuantizeConfig(mode="dynamic", activation_type="int8")
    with pytest.raises(ns.UnknownNameError, match="weight_type"):
        ns.QuantizeConfig(weight_type="int4")  # type: ignore[arg-type]
    with pytest.raises(ns.InputError, match="calib_batches"):
        ns.QuantizeConfig(calib_batches=0)
    with pytest.raises(ns.InputError, match="op_types=\\(\\)"):
        ns.QuantizeConfig(op_types=())
    with pytest.raises(ns.InputError, match="no field 'bits'"):
        ns.QuantizeConfig.from_dict({"bits": 8})


def test_bad_calls_name_the_fix(
    encoderish: tuple[nn.Module, torch.Tensor], digits: tuple[DigitsTask, nn.Module]
) -> None:
    model, x = encoderish
    task, cnn = digits
    cx = task.example_inputs()
    with pytest.raises(ns.InputError, match="static mode needs calibration batches"):
        ns.quantize(cnn, cx)
    with pytest.raises(ns.InputError, match="dynamic mode reads no calibration"):
        ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"), calib=[x])
    with pytest.raises(ns.InputError, match=r"batch 1: input 'input' has shape \(4, 1, 9, 9\)"):
        ns.quantize(cnn, cx, calib=[cx, torch.randn(4, 1, 9, 9)])
    with pytest.raises(ns.InputError, match="has inputs"):
        ns.quantize(cnn, cx, calib=[{"pixels": cx}])
    with pytest.raises(ns.InputError, match="is float64"):
        ns.quantize(cnn, cx, calib=[cx.double()])
    with pytest.raises(ns.InputError, match="holds no batch"):
        ns.quantize(cnn, cx, calib=[])
    with pytest.raises(ns.InputError, match="QuantizeConfig"):
        ns.quantize(cnn, cx, {"mode": "static"}, calib=[cx])  # type: ignore[arg-type]
    with pytest.raises(ns.UnknownNameError, match="close names: 'up'"):
        ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic", float_layers=("upp",)))


@torch.library.custom_op("netsculpt_test_quantize::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _NotExportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _twice(self.fc(x))  # a custom op that no ONNX exporter can translate


def test_a_model_that_does_not_export_is_an_export_error(tmp_path: Path) -> None:
    model = _NotExportable().eval()
    before = _state(model)
    with pytest.raises(ns.ExportError, match="does not export"):
        ns.quantize(model, torch.randn(2, 4), ns.QuantizeConfig(mode="dynamic"))
    assert _unchanged(model, before)


def test_cli_quantizes_a_save_folder(digits: tuple[DigitsTask, nn.Module], tmp_path: Path) -> None:
    task, model = digits
    x = task.example_inputs()
    folder = ns.save(
        ns.prune(model, x, ratio=0.2),
        tmp_path / "small",
        base_factory=BUILTIN_BASE_FACTORIES["digits"],
        example_inputs=x,
    )
    listing = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "small.int8.onnx"
    args = ["quantize", str(folder), "--task", "digits", "--calib", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert "int8" in result.output and "validation score" in result.output
    assert sorted(p.name for p in folder.iterdir()) == listing  # the folder is untouched
    no_task = runner.invoke(app, ["quantize", str(folder), "--out", str(out)])
    assert no_task.exit_code == 2 and "--task digits" in no_task.output
    bad_mode = runner.invoke(app, ["quantize", str(folder), "--mode", "fp8", "--out", str(out)])
    assert bad_mode.exit_code == 2 and "UnknownNameError" in bad_mode.output
    assert runner.invoke(app, ["quantize", "--help"]).exit_code == 0


class _Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


def test_layers_without_an_int8_kernel_fall_back_with_the_reason() -> None:
    torch.manual_seed(0)
    model, x = _Upsampler().eval(), torch.randn(2, 4, 8, 8)
    q = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"))
    kept = {c.module: c.reason for c in q.kept_float}
    assert kept == {"up": "onnxruntime quantizes no ConvTranspose in dynamic mode"}
    assert [c.module for c in q.quantized] == ["conv"]
    only = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic", op_types=("MatMul",)))
    assert {c.module: c.reason for c in only.kept_float}["conv"] == (
        "op type Conv is not in op_types"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            q.run(x), model(x), atol=0.05 * float(model(x).abs().max()), rtol=0
        )


def test_a_failing_pre_processing_step_is_skipped_and_recorded(
    encoderish: tuple[nn.Module, torch.Tensor], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from onnxruntime.quantization import shape_inference

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference failed on node X")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    model, x = encoderish
    q = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"), path=tmp_path / "q.onnx")
    assert q.preprocess.startswith("skipped: onnxruntime's quant_pre_process failed")
    assert "symbolic shape inference failed" in q.recipe["preprocess"]
    assert len(q.quantized) == 3


def test_pre_processing_scratch_files_stay_out_of_the_working_directory(
    encoderish: tuple[nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime's shape inference writes scratch files (a model copy and its external
    data, for large models) into the working directory; ns.quantize runs it elsewhere."""
    import shutil

    from onnxruntime.quantization import shape_inference

    seen: list[Path] = []

    def scratchy(source: str, target: str, **_: object) -> None:
        seen.append(Path.cwd())
        Path("sym_shape_infer_temp.onnx").write_bytes(b"scratch")
        shutil.copyfile(source, target)

    monkeypatch.setattr(shape_inference, "quant_pre_process", scratchy)
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    model, x = encoderish
    q = ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"), path=tmp_path / "q.onnx")
    assert seen and seen[0] != user
    assert list(user.iterdir()) == []
    assert q.preprocess == ""  # it ran


def test_what_onnxruntime_prints_goes_to_the_debug_log(
    encoderish: tuple[nn.Module, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import shutil

    from onnxruntime.quantization import shape_inference

    def chatty(source: str, target: str, **_: object) -> None:
        print("unsupported broadcast between Min(512, s85) s85")
        logging.getLogger().warning("Please consider to run pre-processing before quantization")
        shutil.copyfile(source, target)

    monkeypatch.setattr(shape_inference, "quant_pre_process", chatty)
    model, x = encoderish
    with caplog.at_level(logging.DEBUG, logger="netsculpt.quantization.api"):
        ns.quantize(model, x, ns.QuantizeConfig(mode="dynamic"), path=tmp_path / "q.onnx")
    out, err = capfd.readouterr()
    assert "unsupported broadcast" not in out + err
    assert "Please consider" not in out + err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unsupported broadcast" in logged and "Please consider" in logged
