"""Peak activation memory of one forward pass, counted from the tensors the forward creates.

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees the output of every ATen
operator. Each output whose storage is new (not a parameter, buffer, input or earlier
output) is added to a running total, and a ``weakref.finalize`` on the storage takes it off
again when PyTorch frees it (storages keep their Python object for as long as they live).
The peak of that running total is the measurement.

What it counts: every tensor storage the forward allocates, workspaces created as tensors
included, and the outputs still alive at the end. What it does not count: the parameters,
buffers and inputs (they exist before the forward), and memory a kernel allocates outside
of tensors (for example oneDNN scratch space). The number is exact and does not depend on
the allocator or on what else the process holds, which is why netsculpt uses it instead of
process RSS: it moves when pruning removes activations, and only then.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from netsculpt._inputs import ExampleInputs, call_model


def _storage(tensor: torch.Tensor) -> Any | None:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # opaque tensors (mkldnn, sparse) have none
        return None


class _LiveBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created inside the mode, and their peak."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self._known: set[int] = set()
        for tensor in existing:
            storage = _storage(tensor)
            if storage is not None:
                self._known.add(id(storage))
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)
        self._known.discard(key)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = _storage(tensor)
        if storage is None:
            return
        key, nbytes = id(storage), storage.nbytes()
        if key in self._live:  # an in-place op or an out= op that resized its output
            grown = nbytes - self._live[key]
            if grown > 0:
                self._live[key] = nbytes
                self.current += grown
                self.peak = max(self.peak, self.current)
            return
        if key in self._known or nbytes == 0:
            return
        self._known.add(key)
        self._live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out


def peak_forward_bytes(model: nn.Module, example_inputs: ExampleInputs) -> int:
    """Peak bytes of tensors alive at once during one forward (parameters and inputs excluded).

    The caller decides the autograd and train/eval state; :func:`netsculpt.measure` calls it
    under ``torch.inference_mode`` with the model in eval mode.
    """
    existing = [*model.parameters(), *model.buffers()]
    existing += [x for x in tree_flatten(example_inputs)[0] if isinstance(x, torch.Tensor)]
    tracker = _LiveBytes(existing)
    with tracker:
        out = call_model(model, example_inputs)
    del out
    return tracker.peak
