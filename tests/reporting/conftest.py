"""Fixtures of the report tests: a small finished study on a tiny model (fake task)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "studies"))

from search_helpers import FAST_MEASURE, WidthTask, tiny_mlp


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from netsculpt.studies import SearchSpace, StudyConfig
    from netsculpt.studies.api import search

    model, x = tiny_mlp()
    storage = f"sqlite:///{tmp_path_factory.mktemp('report') / 'study.db'}"
    return search(
        model,
        x,
        task=WidthTask(fail_below=0.3),
        n_trials=8,
        storage=storage,
        study_name="report",
        sampler="random",
        progress=False,
        config=StudyConfig(
            measure_options=FAST_MEASURE,
            space=SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,)),
            seed=1,
        ),
    )
