"""A module that reads its state-dict version while loading (torchvision's MNASNet) reloads
from a save folder: safetensors holds tensors only, netsculpt supplies the versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import netsculpt as ns


class _Versioned(nn.Module):
    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(x)))

    def _load_from_state_dict(
        self, state_dict: Any, prefix: str, local_metadata: Any, *args: Any
    ) -> None:
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be 2, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_a_versioned_module_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _Versioned().eval(), torch.randn(3, 4)
    with pytest.raises(ValueError, match="version should be 2"):  # what a bare dict gives
        model.load_state_dict(dict(model.state_dict()))
    small = ns.prune(model, x, ratio=0.5)
    folder = ns.save(small, tmp_path / "small")
    back = ns.load(folder, base=_Versioned())
    torch.testing.assert_close(back(x), small(x))
    assert "load_state_dict" not in vars(back)  # the loading hook is gone afterwards
