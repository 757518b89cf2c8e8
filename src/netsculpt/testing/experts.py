"""The reference an expert removal is checked against: the original model with the removed
experts' router logits set to ``-inf``.

:func:`netsculpt.prune_experts` is approximate: the tokens a removed expert served go to
other experts. What it computes exactly is the original model whose routers never pick the
removed experts; :func:`removed_experts_masked` runs the original that way, for tests and
benchmarks to compare the pruned model with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["removed_experts_masked"]


class _MaskRouterLogits(TorchFunctionMode):
    """Set chosen experts' logits to -inf wherever one of the routers' weights is applied."""

    def __init__(self, removed: Mapping[int, Sequence[int]]) -> None:
        super().__init__()
        self.removed = removed  # id(router weight) -> experts

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.linear and len(args) > 1 and id(args[1]) in self.removed:
            out = out.clone()
            out[..., list(self.removed[id(args[1])])] = float("-inf")
        return out


def removed_experts_masked(
    original: nn.Module, removed: Mapping[str, Sequence[int]], router: str = "gate"
) -> TorchFunctionMode:
    """A context in which ``original``'s expert layers never route to the removed experts.

    ``removed``: expert layer -> removed experts, as a pruned model's
    ``plan_of(small).meta["removed_experts"]`` lists them; ``router``: the child of each
    layer whose (linear) weight gives the router logits.
    """
    weights = {
        id(original.get_submodule(f"{b}.{router}").weight): ids for b, ids in removed.items()
    }
    return _MaskRouterLogits(weights)
