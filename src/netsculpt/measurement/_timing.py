"""Private helpers for timing: thread counts, eval mode, the timing loop, percentiles."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from netsculpt.errors import InputError


def resolve_threads(threads: int | None) -> int:
    """The thread count to measure with: ``threads``, or PyTorch's current count."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(
            f"threads must be a positive int or None (PyTorch's current count), got {threads!r}"
        )
    return threads


def check_counts(*, warmup: int, repeats: int) -> None:
    """Validate the warm-up and repeat counts of a timing call."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InputError(f"warmup must be an int >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats must be an int >= 1, got {repeats!r}; use at least 1 timed run")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; restore the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode; restore each module's own flag after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage once, then keep the collector off while timing."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_runs(run: Callable[[], object], *, warmup: int, repeats: int) -> list[float]:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times; milliseconds per call."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    with gc_paused():
        for _ in range(repeats):
            start = time.perf_counter_ns()
            run()
            times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation, like ``numpy.percentile``."""
    if not values:
        raise InputError("percentile of an empty list of timings; take at least one run")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
