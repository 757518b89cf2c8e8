"""Latency backends: one object per runtime, kept in a plain registry.

A backend is any object with one method::

    def measure(self, model, example_inputs, *, warmup, repeats, threads) -> list[float]:
        '''Milliseconds per run, for ``repeats`` runs after ``warmup`` untimed ones.'''

Register one with a decorator and name it in :func:`netsculpt.measure`::

    @register_backend("my-runtime")
    class MyRuntime:
        def measure(self, model, example_inputs, *, warmup, repeats, threads):
            ...

A backend may also define ``prepare(model, example_inputs, *, threads)``, a context manager
that yields a zero-argument callable running the model once. :func:`compare_latency` then
prepares each candidate once (one ONNX export, one session) and interleaves single timed
runs; backends without ``prepare`` are interleaved one ``measure`` call at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, call_model
from netsculpt.errors import InputError, MeasureError, NetsculptError, UnknownNameError
from netsculpt.measurement._timing import eval_mode, time_runs, torch_threads

__all__ = [
    "BACKENDS",
    "LatencyBackend",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "get_backend",
    "register_backend",
]


@runtime_checkable
class LatencyBackend(Protocol):
    """What :func:`netsculpt.measure` needs from a backend."""

    def measure(
        self,
        model: nn.Module,
        example_inputs: ExampleInputs,
        *,
        warmup: int,
        repeats: int,
        threads: int,
    ) -> list[float]:
        """Milliseconds per run, for ``repeats`` runs after ``warmup`` untimed runs."""
        ...


BACKENDS: dict[str, LatencyBackend] = {}

_T = TypeVar("_T")


def register_backend(name: str) -> Callable[[_T], _T]:
    """Register a latency backend under ``name``; decorate a class (instantiated with no
    arguments) or an object with a ``measure`` method. A name registered again is replaced."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a backend name must be a non-empty str, got {name!r}")

    def decorator(obj: _T) -> _T:
        backend = obj() if isinstance(obj, type) else obj
        if not callable(getattr(backend, "measure", None)):
            raise InputError(
                f"backend {name!r} ({type(backend).__name__}) has no measure() method; define "
                "measure(model, example_inputs, *, warmup, repeats, threads) -> list[float]"
            )
        BACKENDS[name] = backend  # type: ignore[assignment]
        return obj

    return decorator


def get_backend(name: str) -> LatencyBackend:
    """The backend registered under ``name``."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown latency backend {name!r}; known backends: {sorted(BACKENDS)}; add one "
            "with @netsculpt.measurement.backends.register_backend(name)"
        ) from None


class _PreparedBackend:
    """A backend defined by ``prepare``; ``measure`` warms up and times the prepared run."""

    def prepare(
        self, model: nn.Module, example_inputs: ExampleInputs, *, threads: int
    ) -> AbstractContextManager[Callable[[], object]]:
        raise NotImplementedError

    def measure(
        self,
        model: nn.Module,
        example_inputs: ExampleInputs,
        *,
        warmup: int,
        repeats: int,
        threads: int,
    ) -> list[float]:
        with self.prepare(model, example_inputs, threads=threads) as run:
            return time_runs(run, warmup=warmup, repeats=repeats)


@register_backend("torch")
class TorchBackend(_PreparedBackend):
    """Eager PyTorch on the CPU: eval mode, ``torch.inference_mode``, a fixed thread count."""

    @contextmanager
    def prepare(
        self, model: nn.Module, example_inputs: ExampleInputs, *, threads: int
    ) -> Iterator[Callable[[], object]]:
        with eval_mode(model), torch_threads(threads), torch.inference_mode():
            call_model(model, example_inputs)  # fail early, with a clear message

            def run() -> object:
                return call_model(model, example_inputs)

            yield run


@register_backend("onnxruntime")
class OnnxRuntimeBackend(_PreparedBackend):
    """onnxruntime's CPU provider on a model exported by :func:`netsculpt.export_onnx`.

    The export is not checked against PyTorch here (use ``export_onnx(check=True)`` for
    that); the session runs with ``intra_op_num_threads=threads`` and all graph
    optimisations on.
    """

    @contextmanager
    def prepare(
        self, model: nn.Module, example_inputs: ExampleInputs, *, threads: int
    ) -> Iterator[Callable[[], object]]:
        from netsculpt.export.onnx import export_onnx, onnx_feeds, onnxruntime_session

        with tempfile.TemporaryDirectory(prefix="netsculpt-onnx-") as folder:
            try:
                path = export_onnx(model, example_inputs, Path(folder) / "model.onnx", check=False)
                session = onnxruntime_session(path, threads=threads)
            except NetsculptError as exc:
                raise MeasureError(
                    f"the onnxruntime backend could not export {type(model).__name__}: {exc}; "
                    "measure it with backend='torch' instead"
                ) from exc
        feeds: dict[str, Any] = onnx_feeds(example_inputs, [i.name for i in session.get_inputs()])
        session.run(None, feeds)

        def run() -> object:
            return session.run(None, feeds)

        yield run
