"""Fixtures every test directory shares. Directory conftest files hold only what their tests
use alone."""

import os
import sys
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


@pytest.fixture(autouse=True)
def _forget_imported_factory_files() -> Iterator[None]:
    """Drop the modules that ``path/to/file.py:factory`` specs imported during a test, so the
    next test sees a clean ``sys.modules`` (the hostile-study tests assert that nothing a
    study named was imported, whichever test ran before them)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("_netsculpt_factory_"):
            del sys.modules[name]
