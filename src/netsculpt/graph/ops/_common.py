"""Small helpers shared by the handler families."""

from __future__ import annotations

from typing import Any

from netsculpt.graph.spaces import Space

Desc = list[Space]
"""The description of one tensor: one space per dimension."""


def wrap_dim(d: int, ndim: int) -> int:
    """A dimension index with negative values counted from the end."""
    return d + ndim if d < 0 else d


# torch.fx types node arguments as one broad union (``Argument``); the handlers know from the
# op's schema which arguments are integers or lists, and say so through these.
def int_arg(arg: Any) -> int:
    """An integer argument of an ATen call."""
    return int(arg)


def list_arg(arg: Any) -> list[Any]:
    """A list argument of an ATen call (sizes, dims, tensors)."""
    return list(arg)
