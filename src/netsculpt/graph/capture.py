"""Capturing a model's graph with ``torch.export`` (non-strict), bounded in time."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, describe_inputs, split_inputs
from netsculpt.errors import CaptureError, ExampleInputsError


@contextlib.contextmanager
def _time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise CaptureError after ``seconds`` (main thread only; elsewhere unbounded)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaptureError(
            f"capturing {what} took longer than {seconds:.0f} s and was stopped; pass a "
            f"smaller example input or raise timeout_s"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def capture(
    model: nn.Module, example_inputs: ExampleInputs, *, timeout_s: float | None = 120.0
) -> tuple[torch.export.ExportedProgram, float]:
    """Export ``model`` non-strictly in eval mode; returns the program and the seconds taken.

    The model's training flag is restored afterwards; its weights are never changed.
    """
    args, kwargs = split_inputs(example_inputs)
    if not isinstance(model, nn.Module):
        raise ExampleInputsError(
            f"netsculpt works on torch.nn.Module objects, got {type(model).__name__}"
        )
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    name = type(model).__name__
    try:
        with _time_limit(timeout_s, f"model {name}"), torch.no_grad():
            program = torch.export.export(model, args, kwargs, strict=False)
    except CaptureError:
        raise
    except Exception as exc:
        # distinguish "the inputs do not fit" from "the model cannot be traced"
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        except Exception as call_exc:
            raise ExampleInputsError(
                f"model {name} could not be called with the example inputs "
                f"({describe_inputs(example_inputs)}): {type(call_exc).__name__}: {call_exc}; "
                f"pass inputs the model accepts (a tensor, a tuple, or a dict of keywords)"
            ) from call_exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(
            f"torch.export could not capture model {name}: {type(exc).__name__}: {first}; "
            f"netsculpt needs a graph it can trace: remove data-dependent Python control flow "
            f"from forward, or exclude the module that causes it"
        ) from exc
    finally:
        model.train(was_training)
    return program, time.perf_counter() - start
