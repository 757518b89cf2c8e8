"""Fixtures of the search tests: one thread, a tiny model and a fake task."""

from __future__ import annotations

import pytest
from search_helpers import WidthTask, tiny_mlp


@pytest.fixture
def tiny():  # type: ignore[no-untyped-def]
    return tiny_mlp()


@pytest.fixture
def task() -> WidthTask:
    return WidthTask()
