"""transformers architectures built as a new user builds them (default configs, decoders
returning their cache) prune exactly and reload."""

from __future__ import annotations

import pytest

from netsculpt.testing.conformance import check_model
from netsculpt.testing.wild import TEXT, VISION, WILD, tiny_config

pytest.importorskip("transformers")


def test_registry_names_every_type_once() -> None:
    assert len(WILD) == len(TEXT) + len(VISION) >= 30
    assert tiny_config("gptj").n_embd == 32  # the config's own name for the hidden size


@pytest.mark.parametrize("name", ["gptj", "bloom", "qwen3_moe", "bart", "mobilevit"])
def test_default_config_models_conform(name: str) -> None:
    model, inputs = WILD[name]()
    report = check_model(model, inputs, ratio=0.3)
    assert report.pruned_shapes == report.output_shapes
    assert report.params_drop >= 0.1, f"{name}: {report.params_drop:.1%}"
    assert report.zero_units_max_diff < 1e-4 and report.reload_max_diff == 0.0
