"""A conformance check any model (or new layer handler) can run against netsculpt.

>>> from netsculpt.testing.conformance import check_model
>>> report = check_model(model, example_inputs, ratio=0.3)   # doctest: +SKIP

It prunes the model, runs the smaller copy, saves and reloads it, and measures the
defining property of a correct dependency analysis: channels whose every weight is zero
can be removed without changing the outputs at all. The report holds the figures (output
shapes, parameter counts, largest differences); the caller asserts on them.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, call_model, flatten_outputs
from netsculpt.graph.analysis import Graph, analyze
from netsculpt.pruning.apply import apply
from netsculpt.pruning.planner import plan

__all__ = ["ConformanceReport", "check_model", "zero_units"]


@dataclass
class ConformanceReport:
    """What :func:`check_model` measured (differences are largest absolute values)."""

    params_before: int
    params_after: int
    output_shapes: list[tuple[int, ...]]
    pruned_shapes: list[tuple[int, ...]]
    reload_max_diff: float
    zero_units_max_diff: float
    n_groups: int

    @property
    def params_drop(self) -> float:
        return 1 - self.params_after / self.params_before


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, inputs: ExampleInputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach().float() for t in flatten_outputs(call_model(model, inputs))]


def zero_units(model: nn.Module, graph: Graph, fraction: float, seed: int = 0) -> nn.Module:
    """A copy of ``model`` where ``fraction`` of every prunable group's units are all-zero."""
    zeroed = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    tensors = {**dict(zeroed.named_parameters()), **dict(zeroed.named_buffers())}
    with torch.no_grad():
        for g in graph.prunable_groups:
            n = int(np.floor(g.size * fraction + 1e-9))
            m = g.multiple  # a kernel's alignment: the planner rounds the kept width to it
            if m > 1 and n and g.size > m:
                n = g.size - max(m, min(g.size, round((g.size - n) / m) * m))
            if n == 0:
                continue
            units = rng.choice(g.size, size=n, replace=False)
            for slot in g.slots:
                if slot.is_buffer:
                    continue
                t = tensors[slot.tensor]
                _leaf, arr = graph.index_map(slot.tensor, slot.dim)[g.uid]
                positions = np.nonzero(np.isin(arr, units))[0]
                idx = torch.as_tensor(positions, dtype=torch.long)
                t.index_fill_(slot.dim, idx, 0.0)
    return zeroed


def check_model(
    model: nn.Module, example_inputs: ExampleInputs, *, ratio: float = 0.3
) -> ConformanceReport:
    """Prune, run, save/load and zero-unit checks; returns the measured figures.

    ``model`` is put in eval mode; its weights are not changed.
    """
    from netsculpt.export.save import load, save

    model.eval()
    reference = _outputs(model, example_inputs)
    graph = analyze(model, example_inputs)
    small = apply(model, plan(model, example_inputs, ratio=ratio, graph=graph))
    pruned = _outputs(small, example_inputs)
    with tempfile.TemporaryDirectory() as folder:
        save(small, folder)
        again = load(folder, base=copy.deepcopy(model))
        reloaded = _outputs(again, example_inputs)
    reload_diff = max(
        (float((a - b).abs().max()) for a, b in zip(pruned, reloaded, strict=True) if a.numel()),
        default=0.0,
    )
    zeroed = zero_units(model, graph, ratio)
    zero_ref = _outputs(zeroed, example_inputs)
    zero_small = apply(zeroed, plan(zeroed, example_inputs, ratio=ratio, graph=graph))
    zero_out = _outputs(zero_small, example_inputs)
    zero_diff = max(
        (float((a - b).abs().max()) for a, b in zip(zero_ref, zero_out, strict=True) if a.numel()),
        default=0.0,
    )
    return ConformanceReport(
        params_before=_count(model),
        params_after=_count(small),
        output_shapes=[tuple(t.shape) for t in reference],
        pruned_shapes=[tuple(t.shape) for t in pruned],
        reload_max_diff=reload_diff,
        zero_units_max_diff=zero_diff,
        n_groups=len(graph.prunable_groups),
    )
