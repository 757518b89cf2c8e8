"""Measure a model: parameters, MACs, latency, peak activation memory and weight sparsity.

>>> import netsculpt as ns
>>> m = ns.measure(small, example_inputs, backend="onnxruntime")    # doctest: +SKIP
>>> m.latency_ms_median, m.macs, m.params                          # doctest: +SKIP
(1.92, 278_921_216, 2_791_402)

A quantized model from :func:`netsculpt.quantize` is measured too: its ``.onnx`` file is
timed in onnxruntime, and its size on disk reported, so a float model and its int8 version
read side by side (``compare_latency({"float": model, "int8": q}, x, backend="onnxruntime")``).

Latency on a shared machine is noisy; to say whether one model is faster than another, use
:func:`compare_latency`, which interleaves the candidates' runs so that they all see the
same noise, rather than two separate :func:`measure` calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from netsculpt._checks import check_finite_inputs, check_model
from netsculpt._inputs import ExampleInputs, call_model
from netsculpt.errors import InputError, MeasureError
from netsculpt.measurement._memory import peak_forward_bytes
from netsculpt.measurement._timing import (
    check_counts,
    eval_mode,
    percentile,
    resolve_threads,
    time_runs,
)
from netsculpt.measurement.backends import get_backend

if TYPE_CHECKING:  # quantization imports this module; the check below is structural
    from netsculpt.quantization.api import QuantizedModel

__all__ = [
    "Measurement",
    "compare_latency",
    "count_macs",
    "count_params",
    "interleaved_latency",
    "measure",
    "weight_sparsity",
]


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What :func:`measure` found.

    Attributes:
        params: unique parameters (a tied weight counts once); buffers are not counted.
        macs: multiply-accumulates of one forward on the example inputs (FLOPs / 2, as
            ``torch.utils.flop_counter`` counts matmuls, convolutions and attention).
        latency_ms_median, latency_ms_p90: median and 90th percentile of the timed runs.
        peak_memory_bytes: peak bytes of tensors alive at once during one PyTorch forward,
            parameters and inputs excluded (see ``netsculpt.measurement._memory``); None when
            measured with ``memory=False``. It is the PyTorch number whatever the backend.
        backend: the latency backend.
        threads: the thread count the latency was measured with.
        repeats: the number of timed runs.
        sparsity: fraction of exact zeros in each Linear/Conv weight, by parameter name,
            and over all of them under ``"*"``.
        size_bytes: a module's unique parameters and buffers in bytes (a tied tensor counts
            once); a quantized model's ``.onnx`` file size on disk; None when not measured.
    """

    params: int
    macs: int
    latency_ms_median: float
    latency_ms_p90: float
    peak_memory_bytes: int | None
    backend: str
    threads: int
    repeats: int
    sparsity: dict[str, float] = field(default_factory=dict)
    size_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.params < 0 or self.macs < 0:
            raise InputError(f"params and macs must be >= 0, got {self.params}, {self.macs}")
        if self.size_bytes is not None and self.size_bytes < 0:
            raise InputError(f"size_bytes must be >= 0 or None, got {self.size_bytes}")
        if not 0 <= self.latency_ms_median <= self.latency_ms_p90:
            raise InputError(
                f"latency must satisfy 0 <= median <= p90, got median "
                f"{self.latency_ms_median} and p90 {self.latency_ms_p90}"
            )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return asdict(self)

    def __str__(self) -> str:
        memory = (
            ""
            if self.peak_memory_bytes is None
            else f", peak activations {self.peak_memory_bytes / 2**20:.2f} MiB"
        )
        overall = self.sparsity.get("*", 0.0)
        sparse = f", {overall:.1%} zero weights" if overall else ""
        size = "" if self.size_bytes is None else f", {_size_text(self.size_bytes)}"
        return (
            f"{self.params / 1e6:.3f}M params, {self.macs / 1e6:.1f}M MACs, "
            f"{self.latency_ms_median:.3f} ms median / {self.latency_ms_p90:.3f} ms p90 "
            f"({self.backend}, {self.threads} thread{'s' * (self.threads != 1)}, "
            f"{self.repeats} runs){size}{memory}{sparse}"
        )


def _size_text(size: int) -> str:
    """``"812 B"``, ``"75.4 kB"``, ``"90.9 MB"`` (decimal units, as file sizes are shown)."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.1f} MB"


# --------------------------------------------------------------------------- counts


def count_params(model: nn.Module) -> int:
    """Unique parameters of ``model``: a weight shared by several modules counts once.

    A model on the meta device can be counted (only shapes are read).
    """
    _check_module(model)
    seen_ids: set[int] = set()
    seen_memory: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0
    for _, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen_ids:
            continue
        seen_ids.add(id(param))
        if param.device.type != "meta" and param.data_ptr():
            where = (param.data_ptr(), int(param.storage_offset()), tuple(param.shape))
            if where in seen_memory:  # two Parameter objects over the same memory
                continue
            seen_memory.add(where)
        total += param.numel()
    return total


def _tensor_bytes(model: nn.Module) -> int:
    """Bytes of the unique parameters and buffers of ``model`` (numel x element size); a
    tensor shared by several modules, or two tensors over the same memory, count once."""
    seen_ids: set[int] = set()
    seen_memory: set[tuple[int, int, tuple[int, ...], torch.dtype]] = set()
    total = 0
    tensors: list[torch.Tensor] = [t for _, t in model.named_parameters(remove_duplicate=False)]
    tensors += [t for _, t in model.named_buffers(remove_duplicate=False)]
    for tensor in tensors:
        if id(tensor) in seen_ids:
            continue
        seen_ids.add(id(tensor))
        if tensor.device.type != "meta" and tensor.data_ptr():
            where = (
                tensor.data_ptr(),
                int(tensor.storage_offset()),
                tuple(tensor.shape),
                tensor.dtype,
            )
            if where in seen_memory:
                continue
            seen_memory.add(where)
        total += tensor.numel() * tensor.element_size()
    return total


def _check_module(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model must be a torch.nn.Module, got {type(model).__name__} ({model!r:.60}); pass "
            f"the model object itself"
        )


def _cpu_flash_attention_flop(
    query_shape: Any,
    key_shape: Any,
    value_shape: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    return int(flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape))


def _mkldnn_rnn_layer_flop(
    input_shape: Any, weight0_shape: Any, weight1_shape: Any, *args: Any, **kwargs: Any
) -> int:
    # one LSTM layer and direction on CPU: per step and sequence, the gate rows of the input
    # and recurrent weights times their inputs (gates x hidden x (input + hidden) MACs)
    rows_by_steps = math.prod(input_shape[:-1])
    return 2 * rows_by_steps * (math.prod(weight0_shape) + math.prod(weight1_shape))


def _fused_rnn_flop(input_shape: Any, weight_shapes: Any, *args: Any, **kwargs: Any) -> int:
    # a whole cuDNN / MIOpen recurrent stack: every layer and direction reads each (step,
    # sequence) row once through each of its weight matrices (biases are 1-D: not counted)
    rows_by_steps = math.prod(input_shape[:-1])
    return 2 * rows_by_steps * sum(math.prod(w) for w in weight_shapes if len(w) == 2)


# PyTorch's counter knows the CUDA attention kernels; the CPU one is added here, and the
# fused recurrent kernels: the oneDNN LSTM layer nn.LSTM runs on CPU (GRU and RNN layers run
# as matmuls there, counted as such) and the cuDNN / MIOpen stacks of every recurrent layer.
_EXTRA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop,
    torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer_flop,
    torch.ops.aten._cudnn_rnn: _fused_rnn_flop,
    torch.ops.aten.miopen_rnn: _fused_rnn_flop,
}


def count_macs(model: nn.Module, example_inputs: ExampleInputs) -> int:
    """Multiply-accumulates of one forward of ``model`` on ``example_inputs``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions,
    scaled-dot-product attention and LSTM/GRU/RNN layers, the CPU kernels included: gates x
    hidden x (input + hidden) per step, sequence, layer and direction) as FLOPs / 2, in
    eval mode and with the fused ``nn.TransformerEncoderLayer`` fast path off, so that its
    matmuls are seen. Element-wise work (activations, norms, bias adds) is not counted.
    """
    check_model(model)
    check_finite_inputs(example_inputs)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), torch.no_grad():
            counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
            with counter:
                call_model(model, example_inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops()) // 2


def _is_weight_layer(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) is a Linear with a transposed weight
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or (
        type(module).__name__ == "Conv1D"
        and isinstance(getattr(module, "weight", None), torch.Tensor)
    )


def weight_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each Linear/Conv weight, keyed ``"<module>.weight"``.

    The weight is read as the module uses it (``module.weight``), so masks applied by
    ``torch.nn.utils.prune`` or parametrizations count. Key ``"*"`` holds the fraction over
    all these weights together (a tied weight counts once); it is 0.0 when there are none.
    """
    check_model(model)
    result: dict[str, float] = {}
    zeros = total = 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not _is_weight_layer(module):
            continue
        weight = module.weight
        if not isinstance(weight, torch.Tensor) or weight.numel() == 0:
            continue
        with torch.no_grad():
            n_zero = int((weight == 0).sum())
        result[f"{name}.weight" if name else "weight"] = n_zero / weight.numel()
        if id(weight) not in seen:
            seen.add(id(weight))
            zeros += n_zero
            total += weight.numel()
    result["*"] = zeros / total if total else 0.0
    return result


# --------------------------------------------------------------------------- quantized


@runtime_checkable
class _OnnxModelFile(Protocol):
    """What measuring needs of a :class:`netsculpt.QuantizedModel` (checked by shape, since
    ``netsculpt.quantization`` imports this module): its file and the float model's counts."""

    path: Path
    params: int
    macs: int | None


def _quantized_of(model: Any) -> _OnnxModelFile | None:
    """The quantized model ``model`` is, or wraps (``QuantizedModel.as_module()``), or None."""
    if isinstance(model, nn.Module):
        model = getattr(model, "quantized", None)
    return model if isinstance(model, _OnnxModelFile) else None


def _check_quantized_backend(backend: str | None, what: str) -> None:
    if backend not in (None, "onnxruntime"):
        raise InputError(
            f"{what} is an int8 ONNX model from ns.quantize, which runs in onnxruntime only, "
            f"not with backend={backend!r}; pass backend='onnxruntime' (or leave it out)"
        )


@contextmanager
def _onnx_file_run(
    quantized: _OnnxModelFile, example_inputs: ExampleInputs, *, threads: int
) -> Iterator[Callable[[], object]]:
    """A zero-argument callable running the quantized file once in an onnxruntime session."""
    from netsculpt.export.onnx import onnx_feeds, onnxruntime_session

    path = Path(quantized.path)
    if not path.is_file():
        raise InputError(
            f"the quantized model's file {str(path)!r} is gone; quantize again with ns.quantize "
            f"(pass path= to keep the file somewhere lasting)"
        )
    session = onnxruntime_session(path, threads=threads)
    names = [i.name for i in session.get_inputs()]
    feeds: dict[str, Any] = onnx_feeds(example_inputs, names)
    missing = [name for name in names if name not in feeds]
    if missing:
        raise InputError(
            f"the quantized model {str(path)!r} takes inputs {names}, but {missing} are not "
            f"among the example inputs; pass them as they were passed to ns.quantize"
        )
    try:
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise MeasureError(
            f"onnxruntime could not run the quantized model {str(path)!r} on the example "
            f"inputs: {exc}; pass inputs shaped like those given to ns.quantize"
        ) from exc

    def run() -> object:
        return session.run(None, feeds)

    yield run


def _measure_quantized(
    quantized: _OnnxModelFile,
    example_inputs: ExampleInputs,
    *,
    warmup: int,
    repeats: int,
    threads: int,
) -> Measurement:
    with _onnx_file_run(quantized, example_inputs, threads=threads) as run:
        times = time_runs(run, warmup=warmup, repeats=repeats)
    return Measurement(
        params=int(quantized.params),
        macs=int(quantized.macs or 0),
        latency_ms_median=percentile(times, 50),
        latency_ms_p90=percentile(times, 90),
        peak_memory_bytes=None,
        backend="onnxruntime",
        threads=threads,
        repeats=len(times),
        sparsity={},
        size_bytes=Path(quantized.path).stat().st_size,
    )


# --------------------------------------------------------------------------- latency


def measure(
    model: nn.Module | QuantizedModel,
    example_inputs: ExampleInputs,
    *,
    backend: str | None = None,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    memory: bool = True,
) -> Measurement:
    """Measure ``model`` on ``example_inputs``.

    A quantized model (a :class:`netsculpt.QuantizedModel`, or its ``as_module()``) is timed
    in an onnxruntime session on its ``.onnx`` file; its ``params`` and ``macs`` are the
    float model's, recorded by ``ns.quantize`` (``macs`` is 0 when it quantized an ``.onnx``
    file, which it cannot count), ``size_bytes`` is the file's size, ``peak_memory_bytes``
    is None and ``sparsity`` empty.

    Args:
        model: the model; run in eval mode (each module's training flag is restored after)
            and under ``torch.inference_mode``. Or a quantized model from ``ns.quantize``.
        example_inputs: a tensor, a tuple, or a dict of keyword inputs.
        backend: a registered latency backend: ``"torch"``, ``"onnxruntime"``, or one added
            with :func:`netsculpt.measurement.backends.register_backend`. None (default):
            ``"torch"`` for a module, ``"onnxruntime"`` (the only one) for a quantized model.
        warmup: untimed runs before timing.
        repeats: timed runs; the median and 90th percentile are reported.
        threads: the intra-op thread count for timing (torch: ``torch.set_num_threads``,
            restored after; onnxruntime: ``intra_op_num_threads``). None: PyTorch's
            current count.
        memory: also measure peak activation memory (one extra, slower forward).

    Raises:
        UnknownNameError: ``backend`` is not registered.
        InputError: a quantized model with a backend other than ``"onnxruntime"``.
        ExampleInputsError: the model cannot be called with the example inputs.
        MeasureError: the backend could not run the model.
    """
    quantized = _quantized_of(model)
    if quantized is None:
        check_model(model)
        backend = "torch" if backend is None else backend
    else:
        _check_quantized_backend(backend, "the model")
        backend = "onnxruntime"
    check_finite_inputs(example_inputs)
    runner = get_backend(backend)
    check_counts(warmup=warmup, repeats=repeats)
    threads = resolve_threads(threads)
    if not isinstance(memory, bool):
        raise InputError(f"memory must be True or False, got {memory!r} ({type(memory).__name__})")
    if quantized is not None:
        return _measure_quantized(
            quantized, example_inputs, warmup=warmup, repeats=repeats, threads=threads
        )
    model = cast(nn.Module, model)
    params = count_params(model)
    macs = count_macs(model, example_inputs)
    peak: int | None = None
    if memory:
        with eval_mode(model), torch.inference_mode():
            peak = peak_forward_bytes(model, example_inputs)
    times = runner.measure(model, example_inputs, warmup=warmup, repeats=repeats, threads=threads)
    return Measurement(
        params=params,
        macs=macs,
        latency_ms_median=percentile(times, 50),
        latency_ms_p90=percentile(times, 90),
        peak_memory_bytes=peak,
        backend=backend,
        threads=threads,
        repeats=len(times),
        sparsity=weight_sparsity(model),
        size_bytes=_tensor_bytes(model),
    )


def compare_latency(
    models: Mapping[str, nn.Module | QuantizedModel],
    example_inputs: ExampleInputs,
    *,
    backend: str = "torch",
    rounds: int = 10,
    repeats: int = 5,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, float]:
    """Median latency (ms) of each model, with the models' runs interleaved.

    Each of ``rounds`` rounds times ``repeats`` runs of every model in turn, starting from a
    different model each round, so that drifting machine load reaches every candidate
    alike; the median is taken over all ``rounds * repeats`` runs of a model. Compare a
    pruned model with its original this way::

        medians = compare_latency({"base": model, "pruned": small}, x, backend="onnxruntime")
        speedup = medians["base"] / medians["pruned"]

    Backends with a ``prepare`` method (both built-ins) export and load each model once.
    With ``backend="onnxruntime"``, a value may be a quantized model from ``ns.quantize``
    (its ``.onnx`` file gets a session as is), to time a float model against its int8
    version. :func:`interleaved_latency` returns every timed run instead, for a spread.
    """
    times = interleaved_latency(
        models,
        example_inputs,
        backend=backend,
        rounds=rounds,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )
    return {name: percentile(values, 50) for name, values in times.items()}


def interleaved_latency(
    models: Mapping[str, nn.Module | QuantizedModel],
    example_inputs: ExampleInputs,
    *,
    backend: str = "torch",
    rounds: int = 10,
    repeats: int = 5,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, list[float]]:
    """Every timed run (ms) of each model, the runs interleaved as :func:`compare_latency`
    times them (``rounds * repeats`` per model, in the order they ran); use it to show a
    spread (p10-p90) beside the medians.
    """
    if not isinstance(models, Mapping) or not models:
        raise InputError(
            f"models must be a non-empty dict of name -> model, e.g. {{'base': m, 'pruned': s}}, "
            f"got {type(models).__name__}" + (" (empty)" if isinstance(models, Mapping) else "")
        )
    quantized: dict[str, _OnnxModelFile] = {}
    for name, candidate in models.items():
        if not isinstance(name, str):
            raise InputError(
                f"models must be keyed by names (strings), got key {name!r} "
                f"({type(name).__name__}); e.g. {{'base': m, 'pruned': s}}"
            )
        record = _quantized_of(candidate)
        if record is None:
            check_model(candidate, what=f"models[{name!r}]")
        else:
            _check_quantized_backend(backend, f"models[{name!r}]")
            quantized[name] = record
    check_finite_inputs(example_inputs)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be an int >= 1, got {rounds!r}")
    runner = get_backend(backend)
    check_counts(warmup=warmup, repeats=repeats)
    threads = resolve_threads(threads)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    prepare = getattr(runner, "prepare", None)
    with ExitStack() as stack:
        # quantized files get a session as they are; modules the backend's prepare, if any
        runs: dict[str, Callable[[], object]] = {}
        for name in names:
            if name in quantized:
                run = _onnx_file_run(quantized[name], example_inputs, threads=threads)
            elif callable(prepare):
                run = prepare(models[name], example_inputs, threads=threads)
            else:
                continue
            runs[name] = stack.enter_context(run)
        for name in runs:
            for _ in range(warmup):
                runs[name]()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name in runs:
                    times[name] += time_runs(runs[name], warmup=0, repeats=repeats)
                else:
                    times[name] += runner.measure(
                        cast(nn.Module, models[name]),
                        example_inputs,
                        warmup=warmup if r == 0 else 1,
                        repeats=repeats,
                        threads=threads,
                    )
    return times
