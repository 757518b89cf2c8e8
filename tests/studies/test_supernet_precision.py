"""A super-network search with precision: architecture and int8 chosen together (SimQ-NAS):
an int8 trial's slice is quantized, scored as an ONNX model and timed in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from search_helpers import FAST_MEASURE
from supernet_search_helpers import AgreementTask, ConvNet, images

import netsculpt as ns
from netsculpt.errors import InputError
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies._supernet import SupernetSpace
from netsculpt.studies.front import Front
from netsculpt.supernets.supernet import recalibrate_batchnorm

JOINT = SearchSpace(precision=("float", "int8"))


@pytest.fixture(scope="module")
def made() -> tuple[Any, AgreementTask]:
    torch.manual_seed(0)
    model = ConvNet()
    recalibrate_batchnorm(model, AgreementTask(model).calib_batches(2))
    supernet = ns.elastic(model, images(4, 3), ns.ElasticConfig(keep=(0.5, 0.75, 1.0)))
    return supernet, AgreementTask(model)


def _search(supernet: Any, task: Any, tmp_path: Path, **fields: Any) -> Front:
    config = StudyConfig(
        **{
            "n_trials": 6,
            "sampler": "random",
            "measure_options": FAST_MEASURE,
            "bn_calib_batches": 2,
            "backend": "onnxruntime",
            "space": JOINT,
            "seed": 1,
            **fields,
        }
    )
    return ns.search(
        supernet,
        task=task,
        config=config,
        storage=f"sqlite:///{tmp_path / 'sn.db'}",
        study_name="sn",
        progress=False,
    )


def test_supernet_trials_choose_their_precision(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    front = _search(supernet, task, tmp_path)
    int8 = [t for t in front.completed if t.quantized]
    floats = [t for t in front.completed if not t.quantized]
    assert int8 and floats
    for t in front.completed:
        assert "precision" not in t.arch  # the arch holds the sub-network's choices only
        assert set(t.arch) == {c.name for c in supernet.space.choices}
    trial = int8[0]
    assert trial.precision == {"*": "int8"} and trial.quantize == ns.QuantizeConfig()
    rebuilt = trial.quantized_model(tmp_path / "again.onnx")
    assert task.evaluate(rebuilt.as_module()) == pytest.approx(trial.score)
    reopened = Front.load(f"sqlite:///{tmp_path / 'sn.db'}", "sn", model=supernet, task=task)
    assert {t.number for t in reopened.completed if t.quantized} == {t.number for t in int8}


def test_the_supernet_predictor_features_carry_the_precision(made) -> None:  # type: ignore[no-untyped-def]
    supernet, _ = made
    bound = SupernetSpace.of(supernet, JOINT)
    arch = supernet.largest()
    as_float = bound.encode({**arch, "precision": "float"})
    as_int8 = bound.encode({**arch, "precision": "int8"})
    assert as_float[:-2] == as_int8[:-2] == SupernetSpace.of(supernet).encode(arch)
    assert as_float[-2:] == [1.0, 0.0] and as_int8[-2:] == [0.0, 1.0]
    assert bound.arch({**arch, "precision": "int8"}) == dict(arch)
    assert bound.quantize_config({**arch, "precision": "float"}) is None


def test_only_the_precision_of_the_space_applies(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    staged = SearchSpace(precision=("float", "int8"), precision_tie="stage")
    with pytest.raises(InputError, match="precision_tie='model'"):
        _search(supernet, task, tmp_path, space=staged)
    mixed = SearchSpace(precision=("float", "int8"), min_keep=0.5)
    with pytest.raises(InputError, match=r"min_keep=0\.5.*only precision"):
        _search(supernet, task, tmp_path, space=mixed)
    assert not (tmp_path / "sn.db").exists()


def test_start_from_largest_seeds_the_largest_slice_in_each_precision(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    front = _search(supernet, task, tmp_path, n_trials=2, start_from_largest=True)
    trials = sorted(front.completed, key=lambda t: t.number)
    assert [dict(t.arch) for t in trials] == [dict(supernet.largest())] * 2
    assert [t.quantized for t in trials] == [False, True]
