"""Built-in tasks (a dataset plus a score) and the :class:`Task` base class.

``Task``, ``get_task`` and ``register_task`` import nothing heavy; the built-in tasks
(``DigitsTask`` needs scikit-learn, ``MiniLMTask`` and ``TinyLMTask`` transformers) load on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from netsculpt.tasks.base import Task
from netsculpt.tasks.registry import available_tasks, get_task, register_task

_LAZY = {
    "DigitsCNN": "netsculpt.tasks.digits",
    "DigitsTask": "netsculpt.tasks.digits",
    "pretrained_digits_cnn": "netsculpt.tasks.digits",
    "MiniLMTask": "netsculpt.tasks.minilm",
    "MNIST1DTask": "netsculpt.tasks.mnist1d",
    "ResNet1D": "netsculpt.tasks.mnist1d",
    "pretrained_resnet1d": "netsculpt.tasks.mnist1d",
    "pretrained_minilm": "netsculpt.tasks.minilm",
    "TinyLMConfig": "netsculpt.tasks.tinylm",
    "TinyLMTask": "netsculpt.tasks.tinylm",
    "pretrained_tinylm": "netsculpt.tasks.tinylm",
}

__all__ = [
    "DigitsCNN",
    "DigitsTask",
    "MNIST1DTask",
    "MiniLMTask",
    "ResNet1D",
    "Task",
    "TinyLMConfig",
    "TinyLMTask",
    "available_tasks",
    "get_task",
    "pretrained_digits_cnn",
    "pretrained_resnet1d",
    "pretrained_minilm",
    "pretrained_tinylm",
    "register_task",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netsculpt.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
