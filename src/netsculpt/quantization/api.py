"""``ns.quantize``: post-training int8 quantization of a model through ONNX Runtime.

>>> import netsculpt as ns
>>> task = ns.get_task("digits")                                       # doctest: +SKIP
>>> q = ns.quantize(model, task.example_inputs(), calib=task.calib_batches(8))  # doctest: +SKIP
>>> task.evaluate(q.as_module(), "test"), q.float_bytes / q.quantized_bytes    # doctest: +SKIP
(0.97, 3.4)

The model is exported with :func:`netsculpt.export_onnx` (or an existing ``.onnx`` file is
read), pre-processed with onnxruntime's ``quant_pre_process`` (shape inference and graph
optimisation; skipped, with the reason recorded, when it fails), then quantized by
onnxruntime's own ``quantize_static`` (QDQ format, weights and activations, ranges from
calibration batches) or ``quantize_dynamic`` (weights ahead of time, activations at run
time). netsculpt writes no quantizer of its own: it chooses, checks and records.

The result says, layer by layer, what was quantized and what stayed in float and why (kept
by ``float_layers``, an op type onnxruntime has no int8 kernel for in this mode, ...). The
float model, and the ONNX file or folder it came from, are never modified.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_finite_inputs, check_model
from netsculpt._inputs import ExampleInputs
from netsculpt.errors import ExportError, InputError
from netsculpt.export.onnx import _output_path, export_onnx, onnx_feeds, onnxruntime_session
from netsculpt.export.save import MANIFEST
from netsculpt.measurement.api import count_macs, count_params
from netsculpt.quantization._graph import (
    LayerChoice,
    find_layers,
    match_float_layers,
    quantized_names,
)
from netsculpt.quantization.config import QuantizeConfig

__all__ = ["QuantizedModel", "quantize"]

logger = logging.getLogger(__name__)
_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True, eq=False)
class QuantizedModel:
    """An int8 ONNX model written by :func:`netsculpt.quantize`, and how it was made.

    Attributes:
        path: the quantized ``.onnx`` file (its recipe is beside it, ``<name>.json``).
        config: the options it was quantized with.
        layers: one :class:`LayerChoice` per layer with weights, quantized or kept in float
            (with the reason).
        float_bytes, quantized_bytes: size on disk of the float and quantized ONNX files.
        preprocess: ``""`` when onnxruntime's pre-processing ran, else why it was skipped.
        calib_batches_used: calibration batches read (0 in dynamic mode).
        params: parameters of the float model: ``count_params`` of the module, or, for an
            ``.onnx`` source, the elements of its floating-point initializers of one or more
            dimensions (weights, biases and any float constant tensor the export kept).
        macs: multiply-accumulates of one forward of the float module on the example
            inputs (``count_macs``); None when the source was an ``.onnx`` file.
    """

    path: Path
    config: QuantizeConfig
    layers: tuple[LayerChoice, ...]
    float_bytes: int
    quantized_bytes: int
    preprocess: str
    calib_batches_used: int
    params: int
    macs: int | None
    _session: list[Any] = field(default_factory=list, init=False, repr=False)

    @property
    def quantized(self) -> tuple[LayerChoice, ...]:
        """The layers whose weights are int8 (or uint8)."""
        return tuple(c for c in self.layers if c.quantized)

    @property
    def kept_float(self) -> tuple[LayerChoice, ...]:
        """The layers left in float, each with its reason."""
        return tuple(c for c in self.layers if not c.quantized)

    @property
    def size_ratio(self) -> float:
        """How many times smaller on disk the quantized file is than the float one."""
        return self.float_bytes / max(self.quantized_bytes, 1)

    @property
    def recipe(self) -> dict[str, Any]:
        """A JSON-ready record: the config, each layer's choice, sizes, pre-processing."""
        return {
            "config": self.config.to_dict(),
            "quantized": [c.to_dict() for c in self.quantized],
            "float": [c.to_dict() for c in self.kept_float],
            "float_bytes": self.float_bytes,
            "quantized_bytes": self.quantized_bytes,
            "preprocess": self.preprocess or "ran",
            "calib_batches_used": self.calib_batches_used,
            "params": self.params,
            "macs": self.macs,
        }

    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` (CPU provider) of the quantized file."""
        if not self._session:
            self._session.append(onnxruntime_session(self.path))
        return self._session[0]

    def run(self, inputs: ExampleInputs) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the quantized model on ``inputs`` (shaped like the example inputs; the batch
        size may differ): one tensor for a one-output model, else a tuple of tensors."""
        session = self.session()
        names = [i.name for i in session.get_inputs()]
        feeds = onnx_feeds(inputs, names)
        missing = [name for name in names if name not in feeds]
        if missing:
            raise InputError(
                f"the quantized model takes inputs {names}, but {missing} are not among the "
                f"inputs given; pass them as the example inputs were passed to ns.quantize"
            )
        outputs = [torch.from_numpy(np.asarray(o)) for o in session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def as_module(self) -> nn.Module:
        """A ``torch.nn.Module`` that runs the quantized model (for ``task.evaluate``)."""
        return _OnnxModule(self)


class _OnnxModule(nn.Module):
    """Calls :meth:`QuantizedModel.run`; no parameters, CPU in and out."""

    def __init__(self, quantized: QuantizedModel) -> None:
        super().__init__()
        self.quantized = quantized

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs and args:
            raise InputError("pass the quantized model either positional or keyword inputs")
        inputs: Any = kwargs if kwargs else (args[0] if len(args) == 1 else args)
        return self.quantized.run(inputs)


# --------------------------------------------------------------------------- checks


def _check_config(config: Any) -> QuantizeConfig:
    if config is None:
        return QuantizeConfig()
    if not isinstance(config, QuantizeConfig):
        raise InputError(
            f"config must be a netsculpt.QuantizeConfig, got {type(config).__name__}; e.g. "
            f"config=ns.QuantizeConfig(mode='dynamic')"
        )
    return config


def _calibration_feeds(
    calib: Any, config: QuantizeConfig, example: dict[str, np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """The calibration batches as onnxruntime feeds, each checked against the example."""
    if config.mode == "dynamic":
        if calib is not None:
            raise InputError(
                "dynamic mode reads no calibration batches (activations are quantized at run "
                "time); drop calib=, or pass config=ns.QuantizeConfig(mode='static')"
            )
        return []
    if calib is None:
        raise InputError(
            "static mode needs calibration batches to choose activation ranges; pass "
            "calib=task.calib_batches(8) (or any list of inputs shaped like the example "
            "inputs), or config=ns.QuantizeConfig(mode='dynamic') for weights only"
        )
    if hasattr(calib, "calib_batches") and callable(calib.calib_batches):
        calib = calib.calib_batches(config.calib_batches)
    if isinstance(calib, (torch.Tensor, dict)) or not isinstance(calib, Iterable):
        raise InputError(
            f"calib must be a list (or iterable) of batches shaped like the example inputs, "
            f"got {type(calib).__name__}; e.g. calib=[x1, x2] or calib=task.calib_batches(8)"
        )
    feeds = []
    for index, batch in enumerate(itertools.islice(calib, config.calib_batches)):
        try:
            check_finite_inputs(batch, what=f"calibration batch {index}")
            batch_feeds = onnx_feeds(batch)
        except InputError as exc:
            raise InputError(
                f"calibration batch {index}: {exc}; pass batches of the model's inputs only "
                f"(no labels), shaped like the example inputs"
            ) from None
        _check_batch(index, batch_feeds, example)
        feeds.append(batch_feeds)
    if not feeds:
        raise InputError(
            "calib holds no batch; pass at least one batch of inputs, e.g. "
            "calib=task.calib_batches(8)"
        )
    return feeds


def _check_batch(index: int, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    if set(got) != set(want):
        raise InputError(
            f"calibration batch {index} has inputs {sorted(got)} but the example inputs have "
            f"{sorted(want)}; pass batches with the same structure (a tensor, tuple or dict "
            f"as the example inputs, without labels)"
        )
    for name, array in got.items():
        ref = want[name]
        if array.ndim != ref.ndim or array.shape[1:] != ref.shape[1:]:
            raise InputError(
                f"calibration batch {index}: input {name!r} has shape {tuple(array.shape)} but "
                f"the example inputs' has {tuple(ref.shape)}; only the batch size (dim 0) may "
                f"differ: pass batches shaped like the example inputs"
            )
        if array.dtype != ref.dtype:
            raise InputError(
                f"calibration batch {index}: input {name!r} is {array.dtype} but the example "
                f"inputs' is {ref.dtype}; convert the batches to {ref.dtype}"
            )


def _plan_precision(model: nn.Module, config: QuantizeConfig, *, given: bool) -> QuantizeConfig:
    """``config`` as the model's plan asks: a plan with a precision per layer
    (:meth:`Plan.with_precision`, or a search's int8 trial) gives the options when the
    caller gave none, and its float layers join ``float_layers`` either way."""
    from netsculpt.pruning.apply import plan_of

    plan = plan_of(model)
    planned = plan.quantize_config if plan is not None else None
    if planned is None:
        return config
    return config.keeping_float(planned.float_layers) if given else cast(QuantizeConfig, planned)


def _source_file(source: Any) -> Path:
    path = Path(source)
    if path.is_dir():
        raise InputError(
            f"{str(path)!r} is a folder without netsculpt.json; ns.quantize takes a model, a "
            f"folder written by ns.save, or an .onnx file: pass one of those"
        )
    if not path.is_file() or path.suffix.lower() != ".onnx":
        raise InputError(
            f"{str(path)!r} is not an .onnx file; pass a torch.nn.Module or the path of an "
            f"ONNX model written by ns.export_onnx"
        )
    return path


# --------------------------------------------------------------------------- quantize


def quantize(
    model_or_onnx_path: nn.Module | str | PathLike[str],
    example_inputs: ExampleInputs,
    config: QuantizeConfig | None = None,
    *,
    calib: Any = None,
    path: str | PathLike[str] | None = None,
) -> QuantizedModel:
    """Quantize a model to int8 with onnxruntime and return the quantized ONNX model.

    Args:
        model_or_onnx_path: a ``torch.nn.Module`` (exported with ``ns.export_onnx``), a
            save folder written by ``ns.save`` (read with ``ns.load``; never modified), or
            the path of an ``.onnx`` file exported by netsculpt (read, never modified).
        example_inputs: what the model is called with; names the ONNX inputs and is the
            reference that calibration batches are checked against.
        config: a :class:`QuantizeConfig`; by default the options the model's plan records
            (``Plan.with_precision``, an int8 trial of a search), else static int8 with
            per-channel weights. Layers the plan marks ``"float"`` join ``float_layers``
            in either case.
        calib: static mode: a list (or iterable) of input batches shaped like the example
            inputs (the batch size may differ), or a task (its ``calib_batches``); at most
            ``config.calib_batches`` are read. Dynamic mode takes none.
        path: where to write the quantized ``.onnx`` (its recipe goes beside it as
            ``<name>.json``); by default a new temporary folder.

    Raises:
        InputError: a bad argument, static mode without ``calib``, calibration batches whose
            names, shapes or dtypes differ from the example inputs'.
        UnknownNameError: a ``float_layers`` entry that matches no layer (close names are
            listed).
        ExportError: the model does not export to ONNX, or onnxruntime cannot quantize or
            run it.
    """
    if (
        isinstance(model_or_onnx_path, (str, PathLike))
        and (Path(model_or_onnx_path) / MANIFEST).is_file()
    ):
        from netsculpt.export.save import load

        model_or_onnx_path = load(model_or_onnx_path)  # data only: nothing it names runs
    config_given = config is not None
    config = _check_config(config)
    if isinstance(model_or_onnx_path, nn.Module):
        config = _plan_precision(model_or_onnx_path, config, given=config_given)
    check_finite_inputs(example_inputs)
    example = onnx_feeds(example_inputs)
    calib_feeds = _calibration_feeds(calib, config, example)
    source = None
    macs: int | None = None
    if isinstance(model_or_onnx_path, (str, PathLike)):
        source = _source_file(model_or_onnx_path)
        params = _initializer_params(source)
    else:
        check_model(model_or_onnx_path, what="model_or_onnx_path")
        params = count_params(model_or_onnx_path)
        macs = count_macs(model_or_onnx_path, example_inputs)
    if path is None:
        out = Path(tempfile.mkdtemp(prefix="netsculpt-quantized-")) / "model.int8.onnx"
    else:
        out = _output_path(path)
    if source is not None and out.resolve() == source.resolve():
        raise InputError(
            f"path={str(out)!r} is the float model's file; ns.quantize never overwrites it: "
            f"pass another path, e.g. {str(out.with_suffix('.int8.onnx'))!r}"
        )
    with tempfile.TemporaryDirectory(prefix="netsculpt-quantize-") as work_dir:
        work = Path(work_dir)
        if source is None:
            model = cast(nn.Module, model_or_onnx_path)
            source = _export(model, example_inputs, work / "float.onnx")
        float_bytes = source.stat().st_size
        prepared, preprocess = _preprocess(source, work / "prepared.onnx")
        return _quantize_file(
            prepared,
            out,
            config,
            example=example,
            calib_feeds=calib_feeds,
            float_bytes=float_bytes,
            preprocess=preprocess,
            params=params,
            macs=macs,
        )


def _initializer_params(source: Path) -> int:
    """Elements of the floating-point initializers of an ``.onnx`` file (shapes only)."""
    import onnx

    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    try:
        proto = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 -- onnx raises several types for a bad file
        raise InputError(
            f"{str(source)!r} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            f"pass a file written by ns.export_onnx"
        ) from exc
    return sum(
        math.prod(tensor.dims)
        for tensor in proto.graph.initializer
        if tensor.data_type in floats and tensor.dims  # scalars are constants, not weights
    )


def _export(model: nn.Module, example_inputs: ExampleInputs, path: Path) -> Path:
    try:
        return export_onnx(model, example_inputs, path, dynamic_sequence=True)
    except ExportError as exc:
        raise ExportError(
            f"ns.quantize quantizes the ONNX export of a model, and {type(model).__name__} "
            f"does not export: {exc}"
        ) from exc


def _preprocess(source: Path, target: Path) -> tuple[Path, str]:
    """onnxruntime's ``quant_pre_process``; the source unchanged and why, when it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # onnxruntime's shape inference writes scratch files (a model copy, its external
        # data) into the working directory: keep them in netsculpt's temporary folder
        with contextlib.chdir(target.parent), _quiet("pre-processing"):
            quant_pre_process(str(source.absolute()), str(target.absolute()))
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises many unrelated types
        reason = f"skipped: onnxruntime's quant_pre_process failed ({type(exc).__name__}: {exc})"
        logger.info("%s", reason)
        return source, reason[:300]
    return target, ""


def _quantize_file(
    prepared: Path,
    out: Path,
    config: QuantizeConfig,
    *,
    example: dict[str, np.ndarray],
    calib_feeds: list[dict[str, np.ndarray]],
    float_bytes: int,
    preprocess: str,
    params: int,
    macs: int | None,
) -> QuantizedModel:
    import onnx
    from onnxruntime.quantization import registry

    proto = onnx.load(str(prepared))
    graph_inputs = [i.name for i in proto.graph.input]
    initializers = {t.name for t in proto.graph.initializer}
    needed = [name for name in graph_inputs if name not in initializers]
    missing = [name for name in needed if name not in example]
    if missing:
        raise InputError(
            f"the ONNX model takes inputs {needed}, but the example inputs give "
            f"{sorted(example)}; pass the example inputs as a dict keyed by those names"
        )
    layers = find_layers(proto)
    kept = match_float_layers(config.float_layers, layers)
    # onnxruntime's dynamic quantizer splits a Gemm into "<name>_MatMul" and "<name>_Add"
    # before it reads nodes_to_exclude: a Gemm kept float is excluded under both names
    gemms = {layer.node for layer in layers if layer.op_type == "Gemm"}
    exclude = sorted({*kept, *(f"{name}_MatMul" for name in kept if name in gemms)})
    _run_quantizer(
        prepared,
        out,
        config,
        exclude,
        [{name: feeds[name] for name in needed} for feeds in calib_feeds],
    )
    quantized = quantized_names(onnx.load(str(out)), layers)
    kernels = registry.IntegerOpsRegistry if config.mode == "dynamic" else registry.QDQRegistry
    choices = []
    for layer in layers:
        if layer.node in quantized:
            reason = ""
        elif layer.node in kept:
            reason = f"kept in float by float_layers entry {kept[layer.node]!r}"
        elif config.op_types is not None and layer.op_type not in config.op_types:
            reason = f"op type {layer.op_type} is not in op_types"
        elif layer.op_type not in kernels:
            reason = f"onnxruntime quantizes no {layer.op_type} in {config.mode} mode"
        else:
            reason = "onnxruntime's quantizer left it in float"
        choices.append(LayerChoice(layer.node, layer.op_type, layer.module, not reason, reason))
    result = QuantizedModel(
        path=out,
        config=config,
        layers=tuple(choices),
        float_bytes=float_bytes,
        quantized_bytes=out.stat().st_size,
        preprocess=preprocess,
        calib_batches_used=len(calib_feeds),
        params=params,
        macs=macs,
    )
    try:
        result.session().run(None, {name: example[name] for name in needed})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(
            f"onnxruntime cannot run the quantized model {out}: {exc}; keep the failing layer "
            f"in float with float_layers=[...], or try mode='dynamic'"
        ) from exc
    out.with_suffix(".json").write_text(json.dumps(result.recipe, indent=2) + "\n")
    return result


def _run_quantizer(
    prepared: Path,
    out: Path,
    config: QuantizeConfig,
    exclude: list[str],
    calib_feeds: list[dict[str, np.ndarray]],
) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    op_types = list(config.op_types) if config.op_types is not None else None

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter(calib_feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    try:
        with _quiet("quantizer"):
            _quantize_with(
                config,
                prepared,
                out,
                _Reader(),
                op_types=op_types,
                types=types,
                exclude=exclude,
            )
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises many unrelated types
        raise ExportError(
            f"onnxruntime could not quantize the model in {config.mode} mode "
            f"({type(exc).__name__}: {exc}); keep the failing layer in float with "
            f"float_layers=[...], or try the other mode"
        ) from exc


def _quantize_with(
    config: QuantizeConfig,
    prepared: Path,
    out: Path,
    reader: Any,
    *,
    op_types: list[str] | None,
    types: dict[str, Any],
    exclude: list[str],
) -> None:
    """onnxruntime's ``quantize_dynamic`` or ``quantize_static`` with ``config``'s options."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )

    if config.mode == "dynamic":
        quantize_dynamic(
            str(prepared),
            str(out),
            op_types_to_quantize=op_types,
            per_channel=config.per_channel,
            weight_type=types[config.weight_type],
            nodes_to_exclude=exclude,
        )
        return
    quantize_static(
        str(prepared),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=config.per_channel,
        activation_type=types[str(config.activation_type)],
        weight_type=types[config.weight_type],
        nodes_to_exclude=exclude,
        calibrate_method=getattr(CalibrationMethod, _CALIBRATION[config.calibration_method]),
    )


@contextlib.contextmanager
def _quiet(stage: str) -> Iterator[None]:
    """Keep what onnxruntime's quantization tools print (shape-inference complaints, advice
    on the root logger) off the console; it goes to this module's DEBUG log."""
    from netsculpt.export.onnx import _captured_output

    said: list[str] = []
    try:
        with _captured_output() as said:
            yield
    finally:
        text = "".join(said).strip()
        if text:
            logger.debug("onnxruntime's %s printed:\n%s", stage, text)
