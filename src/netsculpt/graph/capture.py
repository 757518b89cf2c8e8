"""Capturing a model's graph with ``torch.export`` (non-strict), bounded in time.

The bound holds in any thread and leaves the caller's signal handlers and timers alone: the
capture (the export and, when it fails, the plain call that tells inputs the model cannot
take from code ``torch.export`` cannot trace) runs in a daemon worker thread, and the caller
waits for it at most until the deadline.

Python cannot stop a thread, so a capture that runs past its limit goes on in the
background until the model's forward returns (the model stays in eval mode until then);
the caller gets a :class:`CaptureError` at once. ``torch.export`` keeps some state global
to the process, so captures run one at a time: a capture waits, within its own limit, for
one still running in another thread or in the background.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from netsculpt._inputs import describe_inputs, split_inputs, without_cache
from netsculpt.errors import CaptureError, ExampleInputsError

__all__ = ["capture"]

# torch.export pushes modes on process-wide stacks: two exports at once corrupt each other
_CAPTURE_LOCK = threading.Lock()
_TIMED_OUT: Any = object()


class _Status:
    """What the worker is doing, for the timeout message."""

    def __init__(self) -> None:
        self.step = "capturing"
        self.export_failure = ""


def capture(
    model: nn.Module,
    example_inputs: Any,
    *,
    timeout_s: float | None = 120.0,
    training: bool = False,
) -> tuple[torch.export.ExportedProgram, float]:
    """Export ``model`` non-strictly in eval mode (``training=True``: in training mode);
    returns the program and the seconds taken.

    ``timeout_s`` bounds the whole capture, including the plain call that runs when the
    export fails; ``None`` means no bound. The model's training flag is restored afterwards;
    its weights are never changed.

    Raises:
        ExampleInputsError: the model cannot be called with ``example_inputs``.
        CaptureError: ``torch.export`` cannot trace the model, or the limit passed.
    """
    args, kwargs = split_inputs(example_inputs)
    if not isinstance(model, nn.Module):
        raise ExampleInputsError(
            f"netsculpt works on torch.nn.Module objects, got {type(model).__name__}"
        )
    kwargs = without_cache(model, kwargs)
    name = type(model).__name__
    start = time.perf_counter()
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    if not _CAPTURE_LOCK.acquire(timeout=-1 if deadline is None else _left(deadline)):
        raise CaptureError(
            f"capturing model {name} could not start within timeout_s={timeout_s:g} s: "
            f"another capture is still running in this process (an earlier one that ran past "
            f"its limit and finishes in the background, or ns.analyze in another thread), and "
            f"torch.export cannot run twice at once; raise timeout_s, or wait for the other "
            f"capture to finish"
        )
    status = _Status()

    def job() -> torch.export.ExportedProgram:
        try:
            return _capture(model, args, kwargs, example_inputs, status, training=training)
        finally:
            _CAPTURE_LOCK.release()

    if deadline is None:
        program = job()
    else:
        program = _run_in_thread(job, deadline, name=f"capture-{name}")
        if program is _TIMED_OUT:
            cause = f" after torch.export failed ({status.export_failure})"
            raise CaptureError(
                f"{status.step} model {name} took longer than timeout_s={timeout_s:g} s and "
                f"was abandoned{cause if status.export_failure else ''} (it finishes in a "
                f"background thread); pass a smaller example input (a batch of 1, a shorter "
                f"sequence), raise timeout_s (timeout_s=None: no limit), or exclude the slow "
                f"module from the model you analyse"
            )
    return program, time.perf_counter() - start


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _run_in_thread(fn: Callable[[], Any], deadline: float, *, name: str) -> Any:
    """``fn()`` in a daemon thread, waited for until ``deadline`` (``time.monotonic()``).

    Returns ``_TIMED_OUT`` when the deadline passes first; an exception of ``fn`` is raised
    again in the caller. Grad mode and the default device are thread-local in PyTorch, so
    the worker runs under ``torch.no_grad`` on the caller's default device. No signal is
    used, so this works in any thread and never touches the caller's ``SIGALRM`` handler or
    interval timer.
    """
    device = torch.get_default_device()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            placed = torch.device(device) if device.type != "cpu" else contextlib.nullcontext()
            with torch.no_grad(), placed:
                box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"netsculpt-{name}", daemon=True)
    worker.start()
    worker.join(_left(deadline))
    if worker.is_alive():
        return _TIMED_OUT
    if "error" in box:
        raise box.pop("error")
    return box["value"]


def _capture(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    example_inputs: Any,
    status: _Status,
    *,
    training: bool = False,
) -> torch.export.ExportedProgram:
    name = type(model).__name__
    was_training = model.training
    model.train(training)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # nn.LSTM / nn.GRU re-point their cached weight list (_flat_weights) while
            # torch.export traces them, which torch reports on every capture; it is harmless
            warnings.filterwarnings(
                "ignore", message=r"The tensor attributes .*_flat_weights", category=UserWarning
            )
            try:
                return torch.export.export(model, args, kwargs, strict=False)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                status.export_failure = f"{type(exc).__name__}: {first}".rstrip(": ")
                status.step = "calling"
                export_exc = exc
            # distinguish "the inputs do not fit" from "the model cannot be traced"
            try:
                model(*args, **kwargs)
            except Exception as call_exc:
                raise ExampleInputsError(
                    f"model {name} could not be called with the example inputs "
                    f"({describe_inputs(example_inputs)}): {type(call_exc).__name__}: "
                    f"{call_exc}; pass inputs the model accepts (a tensor, a tuple, or a dict "
                    f"of keywords)"
                ) from call_exc
        if isinstance(export_exc, CaptureError):
            raise export_exc
        raise CaptureError(
            f"torch.export could not capture model {name}: {status.export_failure}; "
            f"netsculpt needs a graph it can trace: remove data-dependent Python control flow "
            f"from forward, or exclude the module that causes it"
        ) from export_exc
    finally:
        model.train(was_training)
