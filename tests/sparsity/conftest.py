"""Fixtures for the sparsity tests; ``fake_training`` routes ns.sparsify through a minimal loop."""

from __future__ import annotations

from typing import Any

import pytest
from sparsity_helpers import BlobsTask, loop
from torch import nn


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Route ns.sparsify's training through :func:`loop`; returns the list of step counts."""
    calls: list[int] = []

    def train(model: nn.Module, task: Any, steps: int, **kwargs: Any) -> nn.Module:
        calls.append(steps)
        return loop(
            model, task, steps, lr=kwargs["lr"], seed=kwargs["seed"], callbacks=kwargs["callbacks"]
        )

    monkeypatch.setattr("netsculpt.sparsity.api.train", train)
    return calls


@pytest.fixture
def task() -> BlobsTask:
    return BlobsTask()
