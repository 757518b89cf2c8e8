"""The capture's time limit: every path bounded, in any thread, with no signal."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import netsculpt as ns
from netsculpt.errors import CaptureError, ExampleInputsError
from netsculpt.graph import capture as capture_module

SLEEP_S = 3.0


class SlowForward(nn.Module):
    """Sleeps in forward (for up to 3 s, or until ``release`` is set)."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.release = release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.release.wait(SLEEP_S)
        return self.fc(x)


class SlowEagerCall(nn.Module):
    """torch.export fails at once (data-dependent branch); the plain call sleeps."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.release = release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e30:
            self.release.wait(SLEEP_S)
        return self.fc(x)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set after the test, so that an abandoned capture ends and frees the capture lock."""
    event = threading.Event()
    yield event
    event.set()
    assert capture_module._CAPTURE_LOCK.acquire(timeout=60), "a capture never finished"
    capture_module._CAPTURE_LOCK.release()


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_slow_forward_is_stopped_at_the_limit(release: threading.Event) -> None:
    start = time.monotonic()
    with pytest.raises(CaptureError) as info:
        ns.analyze(SlowForward(release), torch.randn(2, 4), timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    message = str(info.value)
    assert "SlowForward" in message and "timeout_s=0.5" in message
    assert "smaller example input" in message and "raise timeout_s" in message
    assert "exclude the slow module" in message


def test_the_limit_holds_in_a_thread_other_than_main(release: threading.Event) -> None:
    outcome: dict[str, object] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            ns.analyze(SlowForward(release), torch.randn(2, 4), timeout_s=0.5)
        except CaptureError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert isinstance(outcome.get("error"), CaptureError)
    assert float(outcome["seconds"]) < 1.5  # type: ignore[arg-type]


def test_the_eager_fallback_call_is_bounded_too(release: threading.Event) -> None:
    start = time.monotonic()
    with pytest.raises(CaptureError) as info:
        ns.analyze(SlowEagerCall(release), torch.randn(2, 4), timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    assert "calling model SlowEagerCall" in str(info.value)
    assert "after torch.export failed" in str(info.value)


def test_a_capture_waits_for_an_abandoned_one_within_its_own_limit(
    release: threading.Event,
) -> None:
    with pytest.raises(CaptureError):
        ns.analyze(SlowForward(release), torch.randn(2, 4), timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(CaptureError, match="another capture is still running"):
        ns.analyze(_tiny(), torch.randn(2, 4), timeout_s=0.3)
    assert time.monotonic() - start < 1.3
    release.set()  # the abandoned capture ends; the next one runs
    graph = ns.analyze(_tiny(), torch.randn(2, 4), timeout_s=30)
    assert [g.size for g in graph.prunable_groups] == [8]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_the_callers_sigalrm_handler_and_pending_timer_are_left_alone() -> None:
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 60.0)
        before = signal.getitimer(signal.ITIMER_REAL)[0]
        ns.analyze(_tiny(), torch.randn(2, 4), timeout_s=30)
        after = signal.getitimer(signal.ITIMER_REAL)[0]
        assert signal.getsignal(signal.SIGALRM) is handler
        assert 0 < before - after < 30  # still pending, counting down from where it was
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_errors_of_the_worker_reach_the_caller_with_their_kind() -> None:
    with pytest.raises(ExampleInputsError, match="could not be called"):
        ns.analyze(nn.Linear(4, 2), torch.randn(2, 5), timeout_s=30)

    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(CaptureError, match="torch.export could not capture"):
        ns.analyze(DataDependent(), torch.randn(3), timeout_s=30)


def test_capture_runs_without_grad_and_leaves_the_callers_grad_mode() -> None:
    seen: list[tuple[bool, bool]] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_grad_enabled(), self.training))
            return self.b(torch.relu(self.a(x)))

    model = Spy().train()
    with torch.enable_grad():
        graph = ns.analyze(model, torch.randn(2, 4), timeout_s=30)
        assert torch.is_grad_enabled()
    assert seen and all(grad is False and training is False for grad, training in seen)
    assert model.training
    assert [g.size for g in graph.prunable_groups] == [8]


def test_no_limit_runs_in_the_callers_thread() -> None:
    threads: list[threading.Thread] = []

    class Where(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            threads.append(threading.current_thread())
            return self.b(self.a(x))

    ns.analyze(Where(), torch.randn(2, 4), timeout_s=None)
    assert threads and all(t is threading.current_thread() for t in threads)
    threads.clear()
    ns.analyze(Where(), torch.randn(2, 4), timeout_s=30)
    assert threads and all(t is not threading.current_thread() for t in threads)


def test_a_model_all_on_the_meta_device_is_analysed_for_its_structure() -> None:
    with torch.device("meta"):
        model = _tiny()
    graph = ns.analyze(model, torch.randn(2, 4, device="meta"))
    assert [g.size for g in graph.prunable_groups] == [8]
