"""Fixtures every test directory shares. Directory conftest files hold only what their tests
use alone."""

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test runs torch on one thread (timings compare like with like, and two CI cores
    are not oversubscribed); a test that changes the count does not leak it to the next."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
