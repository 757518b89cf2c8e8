"""The transformers config of a pruned model: what its expert layers now are.

A transformers model keeps its sizes twice, in its modules and in ``model.config``. When a
plan removes experts or expert neurons, :func:`sync_config` makes the config agree
(``num_local_experts`` / ``num_experts``, and ``moe_intermediate_size`` /
``intermediate_size`` when every expert layer has the same width) and remembers the base
values, which :func:`netsculpt.save` writes: loading rebuilds the unpruned model from them and
replays the plan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["BASE_CONFIG_ATTR", "base_config_values", "sync_config"]

#: on a pruned model: transformers config fields changed by pruning -> their base values
BASE_CONFIG_ATTR = "_netsculpt_base_config"

_EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")


def _int_attr(module: Any, name: str) -> int | None:
    value = vars(module).get(name) if isinstance(module, nn.Module) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _config_updates(model: nn.Module, config: Any) -> dict[str, int]:
    """Config fields the expert layers of ``model`` now contradict, with their new values:
    the expert count, and the experts' hidden width when every layer agrees on it."""
    counts: set[int] = set()
    widths: set[int] = set()
    for module in model.modules():
        experts = module._modules.get("experts")
        if isinstance(experts, nn.ModuleList):  # one module per expert: count them
            counts.add(len(experts))
            continue
        n = _int_attr(experts, "num_experts") if experts is not None else None
        down = getattr(experts, "down_proj", None)
        if n is None or not isinstance(down, torch.Tensor) or down.dim() != 3:
            continue
        counts.add(n)
        transposed = bool(getattr(experts, "is_transposed", False))
        widths.add(int(down.shape[1] if transposed else down.shape[2]))
    out: dict[str, int] = {}
    if len(counts) == 1:
        for name in _EXPERT_COUNT_FIELDS:
            if isinstance(getattr(config, name, None), int):
                out[name] = counts.pop()
                break
    if len(widths) == 1:
        name = (
            "moe_intermediate_size"
            if isinstance(getattr(config, "moe_intermediate_size", None), int)
            else "intermediate_size"
        )
        if isinstance(getattr(config, name, None), int):
            out[name] = widths.pop()
    return out


def sync_config(original: nn.Module, pruned: nn.Module) -> None:
    """Make the transformers config of ``pruned`` (made from ``original`` by a plan) say how
    many experts, and how wide, its expert layers now are; the base values are kept on the
    model (:data:`BASE_CONFIG_ATTR`) so that :func:`netsculpt.save` writes the config the
    plan is replayed on."""
    config = getattr(pruned, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    base = dict(base_config_values(original))
    changed = False
    for name, value in _config_updates(pruned, config).items():
        old = getattr(config, name)
        if old == value:
            continue
        base.setdefault(name, old)
        setattr(config, name, value)
        changed = True
    if changed or base:
        setattr(pruned, BASE_CONFIG_ATTR, base)


def base_config_values(model: nn.Module) -> dict[str, Any]:
    """Config fields pruning changed on ``model`` -> their values in the unpruned model."""
    values = getattr(model, BASE_CONFIG_ATTR, None)
    return dict(values) if isinstance(values, dict) else {}
