"""Every architecture in the zoo prunes, runs, keeps its output shapes, reloads exactly,
and loses nothing when all-zero channels are removed."""

from __future__ import annotations

import pytest
import torch

from netsculpt.errors import NothingToPruneError
from netsculpt.testing.conformance import check_model
from netsculpt.testing.zoo import ZOO

# Known exceptions, asserted separately below with the reason.
NOT_FULLY_PRUNABLE = {"hf_convnextv2", "hf_segformer"}
STRICT = [name for name in ZOO if name not in NOT_FULLY_PRUNABLE]


def test_zoo_is_large_enough() -> None:
    assert len(STRICT) >= 25
    assert sum(name.startswith("hf_") for name in STRICT) >= 18


@pytest.mark.parametrize("name", STRICT)
def test_zoo_model_conforms(name: str) -> None:
    torch.manual_seed(0)
    model, inputs = ZOO[name]()
    report = check_model(model, inputs, ratio=0.3)
    assert report.pruned_shapes == report.output_shapes
    assert report.params_drop >= 0.15, f"{name}: only {report.params_drop:.1%} fewer parameters"
    assert report.reload_max_diff == 0.0
    assert report.zero_units_max_diff < 1e-4


def test_convnextv2_grn_is_reported_not_pruned() -> None:
    # Global Response Normalisation divides by the mean over channels: removing any channel
    # changes every output, so netsculpt protects those channels and says why.
    model, inputs = ZOO["hf_convnextv2"]()
    with pytest.raises(NothingToPruneError, match="grn"):
        check_model(model, inputs)


def test_segformer_prunes_what_it_can() -> None:
    model, inputs = ZOO["hf_segformer"]()
    report = check_model(model, inputs, ratio=0.3)
    assert report.pruned_shapes == report.output_shapes
    assert report.params_drop > 0.10
    assert report.zero_units_max_diff < 1e-4
