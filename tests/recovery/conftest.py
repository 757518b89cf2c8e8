"""Fixtures for the recovery tests: a fast synthetic task, the digits task and its CNN."""

from __future__ import annotations

import pytest
from recover_helpers import BlobsTask
from torch import nn


@pytest.fixture
def blobs() -> BlobsTask:
    return BlobsTask()


@pytest.fixture(scope="session")
def digits_task():  # type: ignore[no-untyped-def]
    from netsculpt.tasks.digits import DigitsTask

    return DigitsTask()


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    from netsculpt.tasks.digits import pretrained_digits_cnn

    # the same folder as tests/tasks uses, so one session trains the CNN once
    cache = tmp_path_factory.getbasetemp() / "netsculpt-cache"
    cache.mkdir(exist_ok=True)
    return pretrained_digits_cnn(cache_dir=cache)
