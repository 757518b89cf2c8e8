"""Latency backends: the registry, onnxruntime, and interleaved comparison."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from netsculpt.errors import InputError, UnknownNameError
from netsculpt.measurement.api import compare_latency, measure
from netsculpt.measurement.backends import BACKENDS, get_backend, register_backend


@pytest.fixture
def scratch_backends():
    saved = dict(BACKENDS)
    yield
    BACKENDS.clear()
    BACKENDS.update(saved)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_builtin_backends_are_registered() -> None:
    assert {"torch", "onnxruntime"} <= set(BACKENDS)
    with pytest.raises(UnknownNameError, match="known backends"):
        get_backend("nope")


def test_custom_backend_timings_become_median_and_p90(scratch_backends) -> None:
    calls = []

    @register_backend("fixed")
    class Fixed:
        def measure(self, model, example_inputs, *, warmup, repeats, threads):
            calls.append((warmup, repeats, threads))
            return [4.0, 1.0, 3.0, 2.0]

    m = measure(
        nn.Linear(2, 2),
        torch.randn(1, 2),
        backend="fixed",
        warmup=3,
        repeats=9,
        threads=2,
        memory=False,
    )
    assert calls == [(3, 9, 2)]
    assert (m.backend, m.latency_ms_median, m.repeats) == ("fixed", 2.5, 4)
    assert m.latency_ms_p90 == pytest.approx(3.7)


def test_register_backend_rejects_objects_without_measure(scratch_backends) -> None:
    with pytest.raises(InputError, match="measure"):
        register_backend("broken")(object())


def test_onnxruntime_backend_measures_a_cnn() -> None:
    model = small_cnn().train()
    m = measure(model, torch.randn(2, 3, 8, 8), backend="onnxruntime", warmup=1, repeats=5)
    assert m.backend == "onnxruntime"
    assert 0 < m.latency_ms_median <= m.latency_ms_p90
    assert m.repeats == 5
    assert model.training


def test_compare_latency_interleaves_prepared_runs(scratch_backends) -> None:
    order: list[str] = []

    @register_backend("log")
    class Log:
        @contextmanager
        def prepare(self, model, example_inputs, *, threads):
            yield lambda: order.append(model.tag)

        def measure(self, model, example_inputs, *, warmup, repeats, threads):
            raise AssertionError("compare_latency must use prepare() when it exists")

    a, b = nn.Identity(), nn.Identity()
    a.tag, b.tag = "a", "b"
    medians = compare_latency(
        {"a": a, "b": b}, torch.zeros(1), backend="log", rounds=3, repeats=2, warmup=1
    )
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())
    warm, timed = order[:2], order[2:]
    assert warm == ["a", "b"]
    assert timed == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]


def test_compare_latency_calls_measure_per_round_without_prepare(scratch_backends) -> None:
    seen: list[tuple[str, int]] = []

    @register_backend("plain")
    class Plain:
        def measure(self, model, example_inputs, *, warmup, repeats, threads):
            seen.append((model.tag, repeats))
            return [1.0 if model.tag == "fast" else 2.0] * repeats

    fast, slow = nn.Identity(), nn.Identity()
    fast.tag, slow.tag = "fast", "slow"
    medians = compare_latency(
        {"slow": slow, "fast": fast}, torch.zeros(1), backend="plain", rounds=2, repeats=3
    )
    assert medians == {"slow": 2.0, "fast": 1.0}
    assert seen == [("slow", 3), ("fast", 3), ("fast", 3), ("slow", 3)]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_compare_latency_with_builtin_backends(backend: str) -> None:
    big = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
    small = nn.Sequential(nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 256))
    medians = compare_latency(
        {"big": big, "small": small},
        torch.randn(64, 256),
        backend=backend,
        rounds=3,
        repeats=3,
        threads=1,
    )
    assert set(medians) == {"big", "small"}
    assert all(v > 0 for v in medians.values())
    assert torch.get_num_threads() == 1


def test_compare_latency_rejects_empty_models() -> None:
    with pytest.raises(InputError, match="non-empty"):
        compare_latency({}, torch.zeros(1))


def test_public_measure_stays_callable_after_submodule_imports() -> None:
    code = (
        "import netsculpt as ns, netsculpt.measurement.backends, netsculpt.export.onnx\n"
        "assert callable(ns.measure), type(ns.measure)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
