"""Property tests: pruning never breaks the forward pass of a random architecture."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings

import netsculpt as ns
from netsculpt._inputs import call_model
from netsculpt.errors import NothingToPruneError
from netsculpt.testing.conformance import zero_units
from netsculpt.testing.random_arch import random_architectures


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(random_architectures())
def test_pruning_keeps_the_forward_pass(arch: tuple) -> None:
    torch.set_num_threads(1)
    model, inputs = arch
    model.eval()
    with torch.no_grad():
        reference = call_model(model, inputs)
    graph = ns.analyze(model, inputs)
    try:
        small = ns.apply(model, ns.plan(model, inputs, ratio=0.4, graph=graph))
    except NothingToPruneError as exc:
        # nothing prunable, or every group so narrow that 40 % of it is less than one unit
        assert all(int(g.size * 0.4) == 0 for g in graph.prunable_groups)
        assert not graph.prunable_groups or "removes no unit" in str(exc)
        return
    with torch.no_grad():
        out = call_model(small, inputs)
    assert out.shape == reference.shape
    # removing all-zero units changes nothing
    zeroed = zero_units(model, graph, 0.4)
    with torch.no_grad():
        expected = call_model(zeroed, inputs)
        got = call_model(ns.apply(zeroed, ns.plan(zeroed, inputs, ratio=0.4, graph=graph)), inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
