"""ns.search end to end on a tiny model with a fake task: front, pick, resume, cache, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from search_helpers import DENSE_PARAMS, FAST_MEASURE, WidthTask, search_with

import netsculpt as ns
from netsculpt.errors import (
    ConstraintError,
    InputError,
    StorageError,
    StudyMismatchError,
    UnknownNameError,
)
from netsculpt.measurement.api import count_params
from netsculpt.studies import Predictor, SearchSpace, StudyConfig
from netsculpt.studies.api import search
from netsculpt.studies.front import Front

SMALL = SearchSpace(tie="layer", step=0.25, importance=("magnitude",), round_to=(1,))


def run(model, x, task, tmp_path: Path, **kwargs):  # type: ignore[no-untyped-def]
    options = {
        "task": task,
        "n_trials": 6,
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
        "study_name": "tiny",
        "sampler": "random",
        "space": SMALL,
        "progress": False,
        "measure_options": FAST_MEASURE,
    }
    options.update(kwargs)
    return search_with(model, x, **options)


def test_search_returns_a_front_of_measured_plans(tiny, task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    front = run(model, x, task, tmp_path, n_trials=8)
    assert len(front.completed) == 8
    assert 1 <= len(front.trials) <= 8
    # the base model is untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    base = front.baseline
    assert base is not None and base.score == pytest.approx(1.0) and base.params == DENSE_PARAMS
    study = front.study
    # every setting is one JSON user attr, written once by the process that created the study
    settings = json.loads(study.user_attrs["netsculpt:settings"])
    assert settings["config"]["objectives"] == ["score", "latency_ms", "params"]
    assert settings["config"]["space"] == SMALL.to_dict() and settings["model_spec"] is None
    assert StudyConfig.from_dict(settings["config"]) == front.config
    assert settings["recovered"] is False  # WidthTask has no training data
    assert sorted(k for k in study.user_attrs if k.startswith("netsculpt:")) == [
        "netsculpt:baseline",
        "netsculpt:settings",
    ]
    for t in front.trials:
        frozen = study.trials[t.number]
        assert t.params == frozen.user_attrs["params"] == frozen.values[2]
        assert t.score == pytest.approx(t.params / DENSE_PARAMS)
        assert t.latency_ms > 0 and t.latency_p90_ms >= t.latency_ms and t.macs > 0
        assert ns.Plan.from_json(frozen.user_attrs["plan"]).widths == t.plan.widths
        # .model materialises the plan on the base model
        small = t.model
        assert count_params(small) == t.params
        assert small(x).shape == (8, 3)
    # no trial of the front is dominated by another completed trial
    for a in front.trials:
        for b in front.completed:
            dominated = (
                b.score >= a.score
                and b.latency_ms <= a.latency_ms
                and b.params <= a.params
                and (b.score > a.score or b.latency_ms < a.latency_ms or b.params < a.params)
            )
            assert not dominated, (a.number, b.number)


def test_pick_respects_limits_and_explains_failure(tiny, task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    front = run(model, x, task, tmp_path, n_trials=8)
    limit = sorted(t.params for t in front.completed)[len(front.completed) // 2]
    chosen = front.pick(max_params=limit)
    assert chosen.params <= limit
    assert chosen.score == max(t.score for t in front.completed if t.params <= limit)
    assert front.pick().score == max(t.score for t in front.completed)
    with pytest.raises(ConstraintError) as info:
        front.pick(max_params=10)
    message = str(info.value)
    assert "max_params=10" in message and "closest" in message
    smallest = min(front.completed, key=lambda t: t.params)
    assert f"trial {smallest.number} " in message
    knee = front.knee()
    assert knee.number in {t.number for t in front.trials}


def test_resume_continues_without_re_evaluating(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    first_task = WidthTask()
    first = run(model, x, first_task, tmp_path, n_trials=5)
    done_first = {t.number: t.user_attrs["plan_hash"] for t in first.study.trials}
    assert len(done_first) == 5
    second_task = WidthTask()
    second = run(model, x, second_task, tmp_path, n_trials=9)
    trials = second.study.get_trials()
    assert [t.number for t in trials] == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for n, h in done_first.items():
        assert trials[n].user_attrs["plan_hash"] == h
    # the resumed run scored neither the baseline nor the first five trials again
    new_evals = [t for t in trials[5:] if "cached_from" not in t.user_attrs]
    assert len(second_task.calls) == len(new_evals)
    # asking for fewer trials than the study holds runs nothing
    third_task = WidthTask()
    again = run(model, x, third_task, tmp_path, n_trials=4)
    assert third_task.calls == [] and len(again.completed) == 9


def test_identical_plans_are_not_measured_twice(tiny, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.studies import objective

    calls: list[int] = []
    real = objective.measure_model

    def counting(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(count_params(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(objective, "measure_model", counting)
    model, x = tiny
    space = SearchSpace(
        tie="uniform", min_keep=0.5, step=0.5, importance=("magnitude",), round_to=(1,)
    )
    front = run(model, x, WidthTask(), tmp_path, n_trials=8, space=space)
    hashes = {t.user_attrs["plan_hash"] for t in front.study.trials}
    assert len(hashes) <= 2  # keep 0.5 or 1.0
    assert len(calls) == 1 + len(hashes)  # the baseline, then each distinct plan once
    cached = [t for t in front.study.trials if "cached_from" in t.user_attrs]
    assert len(cached) == 8 - len(hashes)


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_failing_evaluations_are_recorded_and_the_search_goes_on(tiny, tmp_path, mode) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    task = WidthTask(fail_below=0.6) if mode == "raise" else WidthTask(nan_below=0.6)
    front = run(model, x, task, tmp_path, n_trials=10, seed=3)
    trials = front.study.trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and complete and len(trials) == 10
    for t in failed:
        reason = t.user_attrs["fail_reason"]
        assert ("model too small" in reason) if mode == "raise" else ("nan" in reason)
    assert all(t.score >= 0.6 for t in front.completed)
    assert {n for n, _ in front.failed} == {t.number for t in failed}


def test_constraints_reach_the_sampler_and_the_front(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    limit = int(DENSE_PARAMS * 0.7)
    front = run(
        model,
        x,
        WidthTask(),
        tmp_path,
        n_trials=8,
        sampler="nsga2",
        constraints={"max_params": limit},
    )
    values = [t.user_attrs["constraints"] for t in front.study.trials]
    assert all(len(v) == 1 for v in values)
    assert all(t.params <= limit for t in front.trials)
    assert front.constraints == {"max_params": float(limit)}
    with pytest.raises(UnknownNameError, match="max_speed"):
        run(model, x, WidthTask(), tmp_path, constraints={"max_speed": 1.0}, study_name="c2")


def test_tpe_and_predictor_run(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    front = run(
        model,
        x,
        WidthTask(),
        tmp_path,
        n_trials=9,
        sampler="tpe",
        predictor=Predictor(min_trials=4, n_candidates=6),
        study_name="pred",
    )
    trials = front.study.trials
    assert len(front.completed) == 9
    screened = [t for t in trials if "netsculpt:predicted" in t.system_attrs]
    assert len(screened) >= 4  # every trial after the first four finished ones
    for t in screened:
        predicted = t.system_attrs["netsculpt:predicted"]
        assert len(predicted) == 3 and all(math.isfinite(v) for v in predicted)


def test_bad_names_and_settings(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    with pytest.raises(UnknownNameError, match="annealing"):
        run(model, x, WidthTask(), tmp_path, sampler="annealing")
    with pytest.raises(UnknownNameError, match="accuracy"):
        run(model, x, WidthTask(), tmp_path, objectives=("accuracy", "latency_ms"))
    with pytest.raises(UnknownNameError, match="unknown task"):
        run(model, x, "no-such-task", tmp_path)
    with pytest.raises(UnknownNameError, match="gradient"):
        run(model, x, WidthTask(), tmp_path, space=SearchSpace(importance=("gradient",)))
    with pytest.raises(InputError, match="workers"):
        run(model, x, WidthTask(), tmp_path, workers=0)


def test_existing_study_with_other_objectives_is_refused(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    run(model, x, WidthTask(), tmp_path, n_trials=2)
    with pytest.raises(StudyMismatchError, match="objectives") as info:
        run(model, x, WidthTask(), tmp_path, n_trials=2, objectives=("score", "macs"))
    assert "study_name" in str(info.value)
    # a plain Optuna study of that name is not taken over either
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    foreign = optuna.create_study(storage=storage, study_name="foreign")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(StudyMismatchError, match="not created by netsculpt"):
        run(model, x, WidthTask(), tmp_path, study_name="foreign")


def test_unreachable_storage_names_the_url_and_the_fix(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    url = "postgresql://nobody:secret@127.0.0.1:9/nowhere"
    with pytest.raises(StorageError) as info:
        run(model, x, WidthTask(), tmp_path, storage=url)
    message = str(info.value)
    assert "127.0.0.1:9/nowhere" in message and "secret" not in message
    assert "server is running" in message
    with pytest.raises(StorageError, match="does not exist"):
        run(model, x, WidthTask(), tmp_path, storage=str(tmp_path / "missing" / "s.journal"))
    with pytest.raises(StorageError, match="journal"):
        run(model, x, WidthTask(), tmp_path, workers=2)


def test_front_load_reopens_the_study(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    front = run(model, x, WidthTask(), tmp_path, n_trials=5)
    again = Front.load(f"sqlite:///{tmp_path / 'study.db'}", "tiny", model=model)
    assert [t.number for t in again.trials] == [t.number for t in front.trials]
    assert again.trials[0] == front.trials[0]
    exported = json.loads(again.to_json())
    assert [t["trial"] for t in exported["trials"]] == [t.number for t in front.trials]
    assert exported["baseline"]["params"] == DENSE_PARAMS
    assert ns.Plan.from_dict(exported["trials"][0]["plan"]).widths == front.trials[0].plan.widths
    assert count_params(again.trials[0].model) == again.trials[0].params
    with pytest.raises(ns.SearchError, match="no study 'other'.*tiny"):
        Front.load(f"sqlite:///{tmp_path / 'study.db'}", "other")
    # without a model, a study started from an object has nothing to apply plans to
    blind = Front.load(f"sqlite:///{tmp_path / 'study.db'}", "tiny")
    with pytest.raises(ns.SearchError, match="model="):
        _ = blind.trials[0].model


def test_default_storage_is_sqlite_in_the_working_folder(tiny, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    model, x = tiny
    front = search(
        model,
        x,
        task=WidthTask(),
        n_trials=2,
        progress=False,
        sampler="random",
        config=StudyConfig(space=SMALL, measure_options=FAST_MEASURE),
    )
    assert (tmp_path / "netsculpt.db").is_file()
    assert front.study_name.startswith("netsculpt-tinymlp-")
    # the same call resumes the same study
    again = search(
        model,
        x,
        task=WidthTask(),
        n_trials=3,
        progress=False,
        sampler="random",
        config=StudyConfig(space=SMALL, measure_options=FAST_MEASURE),
    )
    assert again.study_name == front.study_name and len(again.completed) == 3
