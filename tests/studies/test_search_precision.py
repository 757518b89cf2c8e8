"""Precision as a search dimension: int8 trials are quantized with ns.quantize, scored by
running the quantized ONNX model, timed in onnxruntime, and kept apart in the front."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from precision_helpers import AgreementTask
from search_helpers import FAST_MEASURE, search_with, tiny_mlp

import netsculpt as ns
from netsculpt.errors import InputError, SearchError
from netsculpt.measurement.api import count_params
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies.front import Front
from netsculpt.studies.space import build_space

PRECISION = SearchSpace(
    tie="uniform",
    step=0.25,
    min_keep=0.5,
    importance=("magnitude",),
    round_to=(1,),
    precision=("float", "int8"),
)


def precision_search(task: AgreementTask, storage: Path, **options: Any) -> Front:
    model, x = tiny_mlp()
    return search_with(
        model,
        x,
        task=task,
        storage=str(storage),
        n_trials=options.pop("n_trials", 8),
        sampler="random",
        progress=False,
        backend="onnxruntime",
        recover_budget=None,
        measure_options=FAST_MEASURE,
        space=options.pop("space", PRECISION),
        **options,
    )


# --------------------------------------------------------------------------- the space


def test_space_checks_precision_and_round_trips() -> None:
    space = SearchSpace(precision=("float", "int8"), quantize={"mode": "dynamic"})
    assert space.quantize == ns.QuantizeConfig(mode="dynamic")
    assert space.quantizes and not SearchSpace().quantizes
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(InputError, match=r"'fp8'.*choose from 'float', 'int8'"):
        SearchSpace(precision=("float", "fp8"))
    with pytest.raises(InputError, match="repeats"):
        SearchSpace(precision=("int8", "int8"))
    with pytest.raises(InputError, match="precision_tie='layer'"):
        SearchSpace(precision_tie="layer")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="QuantizeConfig"):
        SearchSpace(quantize="dynamic")  # type: ignore[arg-type]


def test_int8_needs_the_onnxruntime_backend() -> None:
    with pytest.raises(InputError, match="backend='onnxruntime'"):
        StudyConfig(space=PRECISION)
    assert StudyConfig(space=PRECISION, backend="onnxruntime").space.quantizes


def test_bound_space_names_one_precision_per_model_or_stage() -> None:
    model, x = tiny_mlp()
    graph = ns.analyze(model, x)
    bound = build_space(graph, PRECISION)
    assert list(bound.precision_stages) == ["precision"]
    assert bound.quantize_config({"precision": "float"}) is None
    assert bound.quantize_config({"precision": "int8"}) == ns.QuantizeConfig()

    only_int8 = build_space(graph, SearchSpace(precision=("int8",)))
    assert "precision" not in only_int8.distributions
    assert only_int8.precision({}) == {"*": "int8"}

    staged = SearchSpace(
        precision=("float", "int8"),
        precision_tie="stage",
        quantize=ns.QuantizeConfig(float_layers=("out",)),
    )
    bound = build_space(graph, staged)
    stages = sorted({g.stage for g in graph.prunable_groups if g.stage})
    assert list(bound.precision_stages) == [f"precision:{s}" for s in stages]
    params = {name: "int8" for name in bound.precision_stages}
    first = next(iter(bound.precision_stages))
    params[first] = "float"
    config = bound.quantize_config(params)
    assert config is not None
    assert config.float_layers == ("out", bound.precision_stages[first])

    # one precision per prunable group, for the layer that produces it (APQ's policy)
    per_group = build_space(graph, dataclasses.replace(staged, precision_tie="group"))
    layers = sorted({g.module for g in graph.prunable_groups})
    assert list(per_group.precision_stages.values()) == layers
    params = dict.fromkeys(per_group.precision_stages, "int8")
    params[f"precision:{layers[-1]}"] = "float"
    assert per_group.precision(params) == {**dict.fromkeys(layers, "int8"), layers[-1]: "float"}
    config = per_group.quantize_config(params)
    assert config is not None and config.float_layers == ("out", layers[-1])
    # the plan a trial of it would carry names real layers: ns.apply accepts it
    plan = ns.plan_of(ns.prune(model, x, ratio=0.25))
    assert plan is not None
    ns.apply(model, plan.with_precision(per_group.precision(params), config))


# --------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Front, AgreementTask]:
    task = AgreementTask()
    storage = tmp_path_factory.mktemp("precision") / "study.db"
    front = precision_search(task, storage, n_trials=8, seed=3)
    return front, task


def test_int8_trials_are_quantized_scored_in_onnxruntime_and_cached_apart(
    searched: tuple[Front, AgreementTask],
) -> None:
    front, task = searched
    int8 = [t for t in front.completed if t.quantized]
    floats = [t for t in front.completed if not t.quantized]
    assert int8 and floats
    assert "_OnnxModule" in task.scored  # int8 trials ran as ONNX models on the task
    study_trials = {t.number: t for t in front.study.get_trials()}
    for t in int8:
        attrs = study_trials[t.number].user_attrs
        assert t.precision == {"*": "int8"}
        assert t.quantize == ns.QuantizeConfig()
        assert attrs["quantize"] == ns.QuantizeConfig().to_dict()
        assert attrs["int8_layers"] == 3  # fc1, fc2, out
        assert t.size_bytes is not None and t.size_bytes > 0
        assert t.params == count_params(t.model)  # the pruned model's, not the ONNX file's
    # the int8 and float versions of one plan are two cache entries
    keys = {(t.plan.to_json(), t.quantized) for t in front.completed}
    hashes = {study_trials[t.number].user_attrs["plan_hash"] for t in front.completed}
    assert len(hashes) == len(keys)
    rows = front.rows(front.completed)
    assert {r["precision"] for r in rows} == {"float", "int8"}


def test_front_of_splits_float_and_int8_trials(searched: tuple[Front, AgreementTask]) -> None:
    front, _ = searched
    floats = front.front_of(quantized=False)
    assert floats and all(not t.quantized for t in floats)
    assert all(t.quantized for t in front.front_of(quantized=True))
    assert front.front_of() == list(front.trials)
    # the float-only front never beats the joint one: each float member is on it or
    # dominated by a member of it
    joint = front.front_of()
    for t in floats:
        assert t in joint or any(
            o.score >= t.score and o.latency_ms <= t.latency_ms and o.params <= t.params
            for o in joint
        )


def test_int8_trial_rebuilds_to_the_model_the_search_scored(
    searched: tuple[Front, AgreementTask], tmp_path: Path
) -> None:
    front, task = searched
    trial = next(t for t in front.completed if t.quantized)
    quantized = trial.quantized_model(tmp_path / "again.onnx")
    assert task.evaluate(quantized.as_module(), "validation") == pytest.approx(trial.score)
    float_trial = next(t for t in front.completed if not t.quantized)
    with pytest.raises(SearchError, match="float trial"):
        float_trial.quantized_model()


def test_an_int8_trial_carries_its_precision_in_its_plan(
    searched: tuple[Front, AgreementTask], tmp_path: Path
) -> None:
    front, task = searched
    trial = next(t for t in front.completed if t.quantized)
    assert trial.plan.precision == (("*", "int8"),)
    assert trial.plan.quantize_config == trial.quantize
    model = trial.model
    assert ns.plan_of(model).precision == (("*", "int8"),)  # type: ignore[union-attr]
    # quantized from the plan alone (no config), the model scores what the search measured
    again = ns.quantize(model, task.example_inputs(), calib=task, path=tmp_path / "q.onnx")
    assert task.evaluate(again.as_module(), "validation") == pytest.approx(trial.score)
    float_trial = next(t for t in front.completed if not t.quantized)
    assert float_trial.plan.precision == () and float_trial.plan.quantize is None


def test_export_quantized_checks_test_against_validation(
    searched: tuple[Front, AgreementTask], tmp_path: Path
) -> None:
    front, task = searched
    trial = next(t for t in front.completed if t.quantized)
    out = trial.export_quantized(tmp_path / "chosen.onnx", tolerance=1.0)
    assert out.model.path == tmp_path / "chosen.onnx" and out.model.path.is_file()
    assert out.test_score == pytest.approx(task.evaluate(out.model.as_module(), "test"))
    assert out.validation_score == trial.score and out.within_tolerance
    check = json.loads((tmp_path / "chosen.check.json").read_text())
    assert check["test_score"] == out.test_score and check["within_tolerance"] is True
    assert (tmp_path / "chosen.json").is_file()  # the recipe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strict = trial.export_quantized(tmp_path / "strict.onnx", tolerance=0.0)
    assert strict.within_tolerance is (strict.gap == 0.0)
    with pytest.raises(InputError, match="tolerance"):
        trial.export_quantized(tmp_path / "bad.onnx", tolerance=-1)


def test_a_gap_beyond_the_tolerance_warns(
    searched: tuple[Front, AgreementTask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, task = searched
    trial = next(t for t in front.completed if t.quantized)
    real = task.evaluate
    monkeypatch.setattr(
        task, "evaluate", lambda m, split="validation": real(m, split) - 0.5 * (split == "test")
    )
    with pytest.warns(UserWarning, match="test split"):
        out = trial.export_quantized(tmp_path / "gap.onnx", tolerance=0.01)
    assert not out.within_tolerance
    assert out.model.path.is_file()  # the files are kept


def test_a_stored_quantize_record_is_data(
    searched: tuple[Front, AgreementTask], tmp_path: Path
) -> None:
    front, task = searched
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, study_name=front.study_name, directions=front.study.directions
    )
    for key, value in front.study.user_attrs.items():
        study.set_user_attr(key, value)
    trial = next(t for t in front.study.get_trials() if "quantize" in t.user_attrs)
    attrs = dict(trial.user_attrs)
    attrs["quantize"] = {"mode": "static", "module": "os:system"}
    study.add_trial(
        optuna.trial.create_trial(
            params=trial.params,
            distributions=trial.distributions,
            values=trial.values,
            user_attrs=attrs,
        )
    )
    with pytest.raises(SearchError, match="quantize"):
        Front(study, model=tiny_mlp()[0], task=task)


def test_precision_only_int8_quantizes_every_trial(tmp_path: Path) -> None:
    task = AgreementTask()
    space = SearchSpace(
        tie="uniform", step=0.5, min_keep=0.5, importance=("magnitude",), round_to=(1,),
        precision=("int8",), quantize=ns.QuantizeConfig(mode="dynamic"),
    )  # fmt: skip
    front = precision_search(task, tmp_path / "study.db", n_trials=2, space=space)
    assert front.completed and all(t.quantized for t in front.completed)
    assert all(t.quantize.mode == "dynamic" for t in front.completed)


def test_a_per_layer_precision_search_keeps_the_chosen_layers_float(tmp_path: Path) -> None:
    task = AgreementTask()
    space = SearchSpace(
        tie="uniform", step=0.5, min_keep=0.5, importance=("magnitude",), round_to=(1,),
        precision=("float", "int8"), precision_tie="group",
        quantize=ns.QuantizeConfig(mode="dynamic"),
    )  # fmt: skip
    front = precision_search(task, tmp_path / "study.db", n_trials=6, space=space, seed=1)
    mixed = [
        t for t in front.completed if t.quantized and set(t.precision.values()) == {"float", "int8"}
    ]
    assert mixed, [t.precision for t in front.completed]
    trial = mixed[0]
    floats = sorted(m for m, p in trial.precision.items() if p == "float")
    assert sorted(trial.quantize.float_layers) == floats
    assert dict(trial.plan.precision) == trial.precision  # carried by the plan, as data
    q = trial.quantized_model(tmp_path / "again.onnx")
    assert {c.module for c in q.kept_float} >= set(floats)
    assert task.evaluate(q.as_module(), "validation") == pytest.approx(trial.score)


def test_the_predictor_sees_the_precision() -> None:
    model, x = tiny_mlp()
    bound = build_space(ns.analyze(model, x), PRECISION)
    params = {name: 0.75 for name in bound.keep_groups}
    params |= {"importance": "magnitude", "round_to": 1}
    as_float = bound.encode({**params, "precision": "float"})
    as_int8 = bound.encode({**params, "precision": "int8"})
    assert len(as_float) == len(as_int8)
    assert as_float[-2:] == [1.0, 0.0] and as_int8[-2:] == [0.0, 1.0]
    assert as_float[:-2] == as_int8[:-2]


def test_start_from_largest_seeds_the_unpruned_model_in_each_precision(tmp_path: Path) -> None:
    task = AgreementTask()
    storage = tmp_path / "study.db"
    front = precision_search(task, storage, n_trials=3, start_from_largest=True)
    first = sorted(front.completed, key=lambda t: t.number)[:2]
    assert [t.params_dict["keep"] for t in first] == [1.0, 1.0]
    assert [t.params_dict["precision"] for t in first] == ["float", "int8"]
    assert first[0].params == front.baseline.params and not first[0].quantized
    assert first[1].quantized and first[1].score == pytest.approx(front.baseline.score, abs=0.1)
    resumed = precision_search(task, storage, n_trials=5, start_from_largest=True)
    later = [t for t in resumed.completed if t.number >= 3]
    assert len(resumed.completed) == 5 and len(later) == 2  # not seeded again
    with pytest.raises(InputError, match="start_from_largest"):
        StudyConfig(start_from_largest="yes")  # type: ignore[arg-type]


def test_worker_processes_quantize_their_int8_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Path(__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    front = ns.search(
        "search_helpers:tiny_mlp",
        task="precision_helpers:AgreementTask",
        storage=str(tmp_path / "study.journal"),
        progress=False,
        config=StudyConfig(
            n_trials=4,
            workers=2,
            sampler="random",
            backend="onnxruntime",
            recover_budget=None,
            measure_options=FAST_MEASURE,
            space=PRECISION,
            start_from_largest=True,
        ),
    )
    by_number = sorted(front.completed, key=lambda t: t.number)
    assert len(by_number) == 4
    assert {t.quantized for t in by_number[:2]} == {False, True}  # the seeded pair
    pids = {t.user_attrs["worker"]["pid"] for t in front.study.get_trials()}
    assert os.getpid() not in pids
    int8 = next(t for t in by_number if t.quantized)
    attrs = front.study.trials[int8.number].user_attrs
    assert attrs["int8_layers"] == 3 and attrs["quantize"] == ns.QuantizeConfig().to_dict()
