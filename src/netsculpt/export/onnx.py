"""ONNX export through ``torch.onnx``, checked against PyTorch with onnxruntime.

>>> import netsculpt as ns
>>> path = ns.export_onnx(small, example_inputs, "out/model.onnx")   # doctest: +SKIP
>>> ns.check_onnx(small, example_inputs, path)  # max abs difference  # doctest: +SKIP
3.5e-07

Every tensor in the example inputs becomes one ONNX input (a dict's keys name them, so a
transformers model exported with ``{"input_ids": ids, "attention_mask": mask}`` takes inputs
``input_ids`` and ``attention_mask``); other values such as ``use_cache=False`` are fixed
into the graph as constants. The outputs are the model's output tensors in the order of
:func:`netsculpt._inputs.flatten_outputs`, named ``output_0``, ``output_1``, ...

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), which
exports CNNs and transformers encoders correctly with a dynamic batch dimension. If it fails,
``exporter="auto"`` falls back to the TorchScript exporter (``dynamo=False``). The exporter
used is written into the file's metadata under ``netsculpt.exporter``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import TreeSpec, tree_flatten_with_path, tree_unflatten

from netsculpt._checks import check_finite_inputs, check_int, check_model, check_number
from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs, split_inputs
from netsculpt.errors import ExportError, InputError, UnknownNameError
from netsculpt.graph._arguments import check_bool, check_weights

__all__ = ["check_onnx", "export_onnx", "onnx_feeds", "onnxruntime_session"]

Exporter = Literal["auto", "dynamo", "torchscript"]
_EXPORTERS = ("auto", "dynamo", "torchscript")
_METADATA_KEY = "netsculpt.exporter"
_EXTERNAL_DATA_BYTES = 1_500_000_000  # below protobuf's 2 GB limit, with room for the graph
_NOISY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed"
    "onnxscript.optimizer._constant_folding",  # folding attempts that it then skips
)
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inputs


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for every module; each module's own flag is restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@dataclass(frozen=True)
class _Signature:
    """Example inputs split into ONNX tensor inputs and constants kept in the graph."""

    spec: TreeSpec  # of (args, kwargs)
    leaves: tuple[Any, ...]  # every leaf; tensors included (replaced at call time)
    positions: tuple[int, ...]  # which leaves are tensors (the ONNX inputs)
    names: tuple[str, ...]  # ONNX input names, one per tensor leaf

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.leaves[i] for i in self.positions)


def _name(path: tuple[Any, ...], n_args: int) -> str:
    parts: list[str] = []
    for entry in path[1:]:  # path[0] picks args (0) or kwargs (1)
        key = getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry)))
        parts.append(str(key))
    if path and getattr(path[0], "idx", None) == 0:
        parts[0] = "input" if n_args == 1 and len(parts) == 1 else f"input_{parts[0]}"
    return re.sub(r"\W", "_", "_".join(parts)) or "input"


def _signature(example_inputs: ExampleInputs) -> _Signature:
    args, kwargs = split_inputs(example_inputs)
    with_paths, spec = tree_flatten_with_path((args, kwargs))
    leaves = tuple(leaf for _, leaf in with_paths)
    positions = tuple(i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor))
    names = tuple(_name(with_paths[i][0], len(args)) for i in positions)
    if not positions:
        raise InputError(
            "the example inputs hold no tensor, so the ONNX model would have no input; pass "
            "the tensors the model runs on, e.g. x or {'input_ids': ids}"
        )
    return _Signature(spec=spec, leaves=leaves, positions=positions, names=names)


class _FlatModule(nn.Module):
    """``model`` called with the tensor inputs only, returning a flat tuple of tensors."""

    def __init__(self, model: nn.Module, signature: _Signature) -> None:
        super().__init__()
        self.model = model
        self._signature = signature

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = list(self._signature.leaves)
        for position, tensor in zip(self._signature.positions, tensors, strict=True):
            leaves[position] = tensor
        args, kwargs = tree_unflatten(leaves, self._signature.spec)
        return tuple(flatten_outputs(self.model(*args, **kwargs)))


def onnx_feeds(example_inputs: ExampleInputs, names: list[str] | None = None) -> dict[str, Any]:
    """The onnxruntime feed dict (name -> numpy array) for inputs exported by netsculpt.

    ``names`` keeps only the inputs the ONNX graph still has (an exporter drops unused ones).
    """
    signature = _signature(example_inputs)
    feeds = {
        name: tensor.detach().cpu().numpy()
        for name, tensor in zip(signature.names, signature.tensors, strict=True)
    }
    if names is not None:
        feeds = {name: feeds[name] for name in names if name in feeds}
    return feeds


def _doubled_batch(example_inputs: ExampleInputs) -> ExampleInputs | None:
    """The example inputs with the batch repeated twice, or None if there is no batch dim."""
    args, kwargs = split_inputs(example_inputs)
    with_paths, spec = tree_flatten_with_path((args, kwargs))
    tensors = [leaf for _, leaf in with_paths if isinstance(leaf, torch.Tensor) and leaf.ndim]
    if not tensors:
        return None
    batch = tensors[0].shape[0]
    leaves = [
        torch.cat([leaf, leaf])
        if isinstance(leaf, torch.Tensor) and leaf.ndim and leaf.shape[0] == batch
        else leaf
        for _, leaf in with_paths
    ]
    args2, kwargs2 = tree_unflatten(leaves, spec)
    return kwargs2 if isinstance(example_inputs, dict) else args2


# --------------------------------------------------------------------------- export

#: experts implementations (transformers 5.x) whose kernels have no ONNX form; exported as
#: ``batched_mm`` (gather each token's expert weights, batched matmul): the same arithmetic
_GROUPED_EXPERTS = ("grouped_mm", "deepgemm", "sonicmoe")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def _exportable_experts(model: nn.Module) -> Iterator[None]:
    """Run mixture-of-experts layers with transformers' ``batched_mm`` experts while exporting.

    The default ``grouped_mm`` runs ``transformers::grouped_mm_fallback`` (or
    ``aten::_grouped_mm``), which neither exporter can write as ONNX; ``batched_mm`` computes
    the same with gathers and a batched matmul. The configs are restored afterwards.
    """
    configs = {
        id(c): c
        for m in model.modules()
        if (c := getattr(m, "config", None)) is not None
        and getattr(c, "_experts_implementation", None) in _GROUPED_EXPERTS
    }
    saved = [(c, c._experts_implementation) for c in configs.values()]
    try:
        for c, _ in saved:
            c._experts_implementation = "batched_mm"
        yield
    finally:
        for c, value in saved:
            c._experts_implementation = value


@contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Capture what the exporters print (Python and C++ streams, warnings, log records)
    instead of letting it reach the console; the text is in the yielded list afterwards.

    The TorchScript exporter prints its whole intermediate graph when it fails (hundreds of
    kilobytes for a transformer): a failure is reported as one line instead. File
    descriptors 1 and 2 are redirected for the duration, for the whole process.
    """
    import contextlib
    import io
    import sys
    import tempfile

    text: list[str] = []
    python_side = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(python_side)
    saved_fds: list[int] = []
    with tempfile.TemporaryFile() as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            saved_fds = [os.dup(1), os.dup(2)]
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        except OSError:  # no real descriptors (an embedded interpreter): Python streams only
            saved_fds = []
        root.addHandler(handler)
        try:
            with (
                contextlib.redirect_stdout(python_side),
                contextlib.redirect_stderr(python_side),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                yield text
        finally:
            root.removeHandler(handler)
            if saved_fds:
                os.dup2(saved_fds[0], 1)
                os.dup2(saved_fds[1], 2)
                for fd in saved_fds:
                    os.close(fd)
            sink.seek(0)
            text.append(python_side.getvalue())
            text.append(sink.read().decode("utf-8", errors="replace"))


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, shortened, without colour codes."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    first = next((line for line in lines if line), "")
    first = first if len(first) <= limit else first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's known harmless chatter; errors still propagate."""
    saved = [(name, logging.getLogger(name).level) for name in _NOISY_LOGGERS]
    for name, _ in saved:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*training mode.*")
            # nn.LSTM / nn.GRU re-point their cached weight list while being traced
            warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights")
            yield
    finally:
        for name, level in saved:
            logging.getLogger(name).setLevel(level)


def _export(
    flat: _FlatModule,
    signature: _Signature,
    path: Path,
    *,
    kind: str,
    opset: int | None,
    dynamic_batch: bool,
    n_outputs: int,
    external_data: bool,
    dynamic_sequence: bool = False,
) -> None:
    output_names = [f"output_{i}" for i in range(n_outputs)]
    tensors = signature.tensors

    def sequence(t: torch.Tensor) -> bool:  # token ids and masks: [batch, sequence, ...]
        return dynamic_sequence and t.ndim >= 2 and not t.is_floating_point()

    if kind == "dynamo":
        dims = tuple(
            ({0: torch.export.Dim.DYNAMIC} | ({1: torch.export.Dim.AUTO} if sequence(t) else {}))
            if t.ndim
            else None
            for t in tensors
        )
        torch.onnx.export(
            flat,
            tensors,
            str(path),
            dynamo=True,
            input_names=list(signature.names),
            output_names=output_names,
            opset_version=opset,
            dynamic_shapes=(dims,) if dynamic_batch else None,
            external_data=external_data,
            verbose=False,
        )
    else:
        axes = {
            name: {0: "batch"} | ({1: "sequence"} if sequence(t) else {})
            for name, t in zip(signature.names, tensors, strict=True)
            if t.ndim
        }
        torch.onnx.export(
            flat,
            tensors,
            str(path),
            dynamo=False,
            input_names=list(signature.names),
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=axes if dynamic_batch else None,
            verbose=False,
        )


def _tag(path: Path, kind: str) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    entry = next((p for p in proto.metadata_props if p.key == _METADATA_KEY), None)
    if entry is None:
        entry = proto.metadata_props.add()
        entry.key = _METADATA_KEY
    entry.value = kind
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    exporter: Exporter = "auto",
    dynamic_sequence: bool = False,
) -> Path:
    """Export ``model`` to an ONNX file at ``path`` and return the path.

    Args:
        model: the model; exported in eval mode (each module's flag is restored after).
        example_inputs: a tensor, a tuple, or a dict of keyword inputs; its tensors become
            the ONNX inputs, anything else is fixed into the graph.
        path: the ``.onnx`` file to write; missing folders are created.
        opset: the ONNX opset; None lets ``torch.onnx`` choose.
        dynamic_batch: make dim 0 of every input dynamic.
        check: run the file with onnxruntime and compare with PyTorch (see
            :func:`check_onnx`); with ``dynamic_batch`` also at twice the example batch.
        atol, rtol: tolerances of the check.
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``), ``"torchscript"``
            (``dynamo=False``), or ``"auto"``: dynamo, then TorchScript if dynamo fails.
        dynamic_sequence: with ``dynamic_batch``, also make dim 1 of every integer input of
            two or more dims (token ids, attention masks) dynamic, so that a text model runs
            at any sequence length (the exporter keeps it fixed where the model needs it).

    Raises:
        InputError: an argument of the wrong type or out of range, a model with NaN weights.
        ExportError: ``path`` cannot be written, both exporters failed (the causes are in
            the message), or the exported model does not match PyTorch.
    """
    check_model(model)
    check_finite_inputs(example_inputs)
    if not isinstance(exporter, str) or exporter not in _EXPORTERS:
        raise UnknownNameError(f"unknown exporter {exporter!r}; choose one of {_EXPORTERS}")
    check_int(opset, "opset", minimum=7, allow_none=True)
    check_bool(dynamic_batch, "dynamic_batch")
    check_bool(dynamic_sequence, "dynamic_sequence")
    check_bool(check, "check")
    check_number(atol, "atol", minimum=0.0)
    check_number(rtol, "rtol", minimum=0.0)
    path = _output_path(path)
    check_weights(model)
    signature = _signature(example_inputs)
    flat = _FlatModule(model, signature)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kinds = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    with _eval_mode(flat):
        with torch.no_grad():
            n_outputs = len(flatten_outputs(call_model(model, example_inputs)))
        for kind in kinds:
            said: list[str] = []
            try:
                with _quiet_exporter(), _exportable_experts(model), _captured_output() as said:
                    _export(
                        flat,
                        signature,
                        path,
                        kind=kind,
                        opset=opset,
                        dynamic_batch=dynamic_batch,
                        n_outputs=n_outputs,
                        external_data=param_bytes > _EXTERNAL_DATA_BYTES,
                        dynamic_sequence=dynamic_sequence and dynamic_batch,
                    )
            except Exception as exc:  # noqa: BLE001 -- the exporters raise many unrelated types
                failures.append(f"{kind} exporter: {_one_line(exc)}")
                logger.info("ONNX %s export of %s failed: %s", kind, type(model).__name__, exc)
                logger.debug("the %s exporter printed:\n%s", kind, "".join(said))
                continue
            logger.debug("the %s exporter printed:\n%s", kind, "".join(said))
            logger.info("exported %s to %s with the %s exporter", type(model).__name__, path, kind)
            break
        else:
            raise ExportError(
                f"ONNX export of {type(model).__name__} to {path} failed ({'; '.join(failures)}); "
                "try dynamic_batch=False if the model fixes its batch size, another opset=, "
                "exporter='torchscript' or 'dynamo' alone, or exclude the module that uses the "
                "unsupported operator (what the exporters printed is logged at DEBUG level by "
                "the 'netsculpt.export.onnx' logger)"
            )
    _tag(path, kind)
    if check:
        check_onnx(model, example_inputs, path, atol=atol, rtol=rtol)
        doubled = _doubled_batch(example_inputs) if dynamic_batch else None
        if doubled is not None:
            check_onnx(model, doubled, path, atol=atol, rtol=rtol)
    return path


def _output_path(path: Any) -> Path:
    """``path`` as a file path whose folder exists (created when missing)."""
    if isinstance(path, bool) or not isinstance(path, (str, PathLike)) or not str(path):
        raise InputError(
            f"path must be the .onnx file to write (a str or pathlib.Path), got {path!r} "
            f"({type(path).__name__}); e.g. path='out/model.onnx'"
        )
    out = Path(path)
    if out.is_dir():
        raise ExportError(
            f"cannot export to {str(out)!r}: it is a folder; pass a file path inside it, e.g. "
            f"{str(out / 'model.onnx')!r}"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), out.parent)
        raise ExportError(
            f"cannot export to {str(out)!r}: {str(blocker)!r} is a file, not a folder, so "
            f"the folder for the ONNX file cannot be created; pass a path in a folder, or "
            f"move that file away"
        ) from exc
    except OSError as exc:
        raise ExportError(
            f"cannot create the folder {str(out.parent)!r} for {str(out)!r}: "
            f"{exc.strerror or exc}; pass a path you can write to"
        ) from exc
    if not os.access(out.parent, os.W_OK):
        raise ExportError(
            f"cannot write {str(out)!r}: the folder {str(out.parent)!r} is not writable; pass "
            f"a path you can write to"
        )
    return out


# --------------------------------------------------------------------------- check


def onnxruntime_session(path: str | PathLike[str], *, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with all graph optimisations on.

    ``threads`` sets ``intra_op_num_threads`` (None: onnxruntime's default); inter-op
    parallelism is off so that ``threads`` is the number of cores the model uses.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(
            f"onnxruntime cannot load {path}: {exc}; re-export it with netsculpt.export_onnx"
        ) from exc


def check_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | PathLike[str],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> float:
    """Run the ONNX file with onnxruntime and compare every output with PyTorch's.

    Returns the largest absolute difference over all outputs. An output fails when
    ``|onnx - torch| > atol + rtol * |torch|`` anywhere.

    Raises:
        ExportError: an output differs, or the number or shapes of the outputs differ.
    """
    session = onnxruntime_session(path)
    feeds = onnx_feeds(example_inputs, [i.name for i in session.get_inputs()])
    try:
        got = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(
            f"onnxruntime failed to run {path} on the example inputs: {exc}; export it again "
            "with these inputs, or with dynamic_batch=True if only the batch size differs"
        ) from exc
    with _eval_mode(model), torch.inference_mode():
        expected = [
            t.detach().float().cpu().numpy()
            for t in flatten_outputs(call_model(model, example_inputs))
        ]
    if len(got) != len(expected):
        raise ExportError(
            f"{path} has {len(got)} outputs but the PyTorch model returns {len(expected)} "
            "tensors; export the model again with netsculpt.export_onnx"
        )
    worst = 0.0
    for index, (onnx_out, torch_out) in enumerate(zip(got, expected, strict=True)):
        onnx_out = np.asarray(onnx_out, dtype=np.float64)
        torch_out = np.asarray(torch_out, dtype=np.float64)
        if onnx_out.shape != torch_out.shape:
            raise ExportError(
                f"ONNX output {index} of {path} has shape {onnx_out.shape} but PyTorch's has "
                f"{torch_out.shape}; export again with these example inputs"
            )
        if onnx_out.size == 0:
            continue
        diff = np.abs(onnx_out - torch_out)
        max_diff = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
        bad = ~(diff <= atol + rtol * np.abs(torch_out))  # NaN counts as a mismatch
        if bad.any():
            raise ExportError(
                f"ONNX output {index} of {path} differs from PyTorch by up to {max_diff:.3g} "
                f"(max abs; allowed atol={atol:g} + rtol={rtol:g} * |value|, "
                f"{int(bad.sum())} of {diff.size} values outside); if this is rounding, raise "
                "atol/rtol, otherwise try export_onnx(..., exporter='torchscript' or 'dynamo')"
            )
        worst = max(worst, max_diff)
    return worst
