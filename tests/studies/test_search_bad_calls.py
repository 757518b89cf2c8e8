"""Bad calls of ``ns.search``: each raises its NetsculptError before anything runs.

Every case runs in an empty working folder with the default storage: a call that fails
must leave it empty (no study created, no dense model measured, no trial run), and the
task must not have been asked to score anything. A key of the table that is a field of
:class:`StudyConfig` goes into the config, built inside the call: a bad field is refused
when the config is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from search_helpers import FAST_MEASURE, WidthTask, tiny_mlp

import netsculpt as ns
from netsculpt.errors import (
    ExampleInputsError,
    FactoryError,
    InputError,
    InvalidRatioError,
    NetsculptError,
    UnknownNameError,
)
from netsculpt.studies import Predictor, SearchSpace, StudyConfig
from netsculpt.studies.api import search

SMALL = SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,))


def _meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Linear(8, 3))


def _nan_model() -> torch.nn.Module:
    model, _ = tiny_mlp()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    return model


MODEL = object()  # stands for the tiny model in the table


# (id, keyword overrides, expected error class, message fragment)
CASES: list[tuple[str, dict[str, Any], type[NetsculptError], str]] = [
    ("task-none", {"task": None}, InputError, "needs task="),
    ("task-int", {"task": 5}, InputError, "task must be an ns.Task"),
    ("task-empty", {"task": ""}, InputError, "task='' is empty"),
    ("task-unknown", {"task": "no-such-task"}, UnknownNameError, "unknown task 'no-such-task'"),
    ("task-bad-import", {"task": "no_such_pkg_xyz:Task"}, FactoryError, "could not be imported"),
    ("model-none", {"model": None}, InputError, "model is None"),
    ("model-int", {"model": 3}, InputError, "must be a torch.nn.Module"),
    ("model-list", {"model": [1, 2]}, InputError, "must be a torch.nn.Module"),
    ("model-empty-string", {"model": "  "}, InputError, "is empty"),
    ("model-unknown-string", {"model": "resnet50"}, FactoryError, "neither a built-in name"),
    ("model-bad-module", {"model": "no_such_pkg_xyz:build"}, FactoryError, "could not be imp"),
    ("model-meta", {"model": "meta"}, InputError, "meta device"),
    ("model-nan", {"model": "nan"}, InputError, "NaN values in 'fc1.weight'"),
    ("inputs-nan", {"example_inputs": "nan"}, ExampleInputsError, "NaN or infinite"),
    ("seed-string", {"seed": "x"}, InputError, "seed must be an integer, got 'x'"),
    ("seed-float", {"seed": 1.5}, InputError, "seed must be an integer"),
    ("seed-negative", {"seed": -1}, InputError, "seed must be at least 0"),
    ("seed-bool", {"seed": True}, InputError, "seed must be an integer"),
    ("n-trials-zero", {"n_trials": 0}, InputError, "n_trials must be at least 1"),
    ("n-trials-negative", {"n_trials": -3}, InputError, "n_trials must be at least 1"),
    ("n-trials-float", {"n_trials": 2.5}, InputError, "n_trials must be an integer"),
    ("n-trials-string", {"n_trials": "10"}, InputError, "n_trials must be an integer"),
    ("budget-negative", {"recover_budget": -5}, InputError, "budget=-5"),
    ("budget-zero", {"recover_budget": 0}, InputError, "no training steps"),
    ("budget-gibberish", {"recover_budget": "soon"}, InputError, "not understood"),
    ("budget-list", {"recover_budget": [1]}, InputError, "budget must be"),
    ("sampler-unknown", {"sampler": "annealing"}, UnknownNameError, "unknown sampler"),
    ("sampler-int", {"sampler": 3}, InputError, "sampler must be a name"),
    ("objective-unknown", {"objectives": ("accuracy",)}, UnknownNameError, "'accuracy'"),
    ("objectives-empty", {"objectives": ()}, UnknownNameError, "is empty"),
    ("objectives-repeat", {"objectives": ("score", "score")}, UnknownNameError, "repeat"),
    ("objectives-int", {"objectives": 5}, InputError, "objectives must be a tuple"),
    ("objectives-none-inside", {"objectives": ("score", None)}, InputError, "hold names"),
    ("importance-unknown", {"space": "gradient"}, UnknownNameError, "gradient"),
    ("workers-zero", {"workers": 0}, InputError, "workers must be at least 1"),
    ("workers-string", {"workers": "2"}, InputError, "workers must be an integer"),
    ("workers-huge", {"workers": 10**6}, InputError, "more processes"),
    ("constraint-key", {"constraints": {"max_speed": 1}}, UnknownNameError, "max_speed"),
    ("constraint-string", {"constraints": {"max_params": "1k"}}, InputError, "needs a number"),
    ("constraint-nan", {"constraints": {"max_latency_ms": float("nan")}}, InputError, "finite"),
    ("constraint-zero", {"constraints": {"max_latency_ms": 0}}, InputError, "positive limit"),
    ("constraint-bool", {"constraints": {"max_params": True}}, InputError, "needs a number"),
    ("constraints-list", {"constraints": [("max_params", 5)]}, InputError, "must be a dict"),
    ("storage-int", {"storage": 42}, InputError, "storage must be None"),
    ("storage-empty", {"storage": ""}, InputError, "storage='' is empty"),
    ("storage-dict", {"storage": {"url": "x"}}, InputError, "storage must be None"),
    ("study-name-int", {"study_name": 7}, InputError, "study_name must be"),
    ("study-name-empty", {"study_name": ""}, InputError, "study_name must be"),
    ("study-name-long", {"study_name": "s" * 600}, InputError, "at most 512"),
    ("space-dict", {"space": {"tie": "layer"}}, InputError, "SearchSpace"),
    ("predictor-string", {"predictor": "yes"}, InputError, "predictor must be True"),
    ("backend-unknown", {"backend": "tensorrt"}, UnknownNameError, "unknown latency backend"),
    ("backend-none", {"backend": None}, InputError, "backend must be"),
    ("timeout-zero", {"timeout": 0}, InputError, "timeout must be positive"),
    ("timeout-string", {"timeout": "1h"}, InputError, "timeout must be a number"),
    ("progress-string", {"progress": "yes"}, InputError, "progress must be True or False"),
    ("measure-unknown", {"measure_options": {"repeat": 3}}, UnknownNameError, "'repeat'"),
    ("measure-repeats", {"measure_options": {"repeats": 0}}, InputError, "repeats must be"),
    ("measure-threads", {"measure_options": {"threads": -2}}, InputError, "threads must be"),
    ("measure-list", {"measure_options": [1]}, InputError, "measure_options must be a dict"),
    ("workers-sampler-object", {"workers": 2, "sampler": "object"}, InputError, "instance"),
    ("config-dict", {"config": {"n_trials": 3}}, InputError, "StudyConfig.from_dict"),
    ("config-class", {"config": StudyConfig}, InputError, "config=StudyConfig(...)"),
    ("config-string", {"config": "fast"}, InputError, "config must be a netsculpt StudyConfig"),
    ("recover-dict", {"recover": {"lr": 1e-3}}, InputError, "recover must be a DistillConfig"),
    ("test-scores-string", {"test_scores": "no"}, InputError, "test_scores must be True"),
    ("sampler-in-config", {"config_sampler": "object"}, InputError, "sampler must be a name"),
]


#: StudyConfig fields the table sets through the config (n_trials and sampler are also
#: arguments of ns.search, which replace the config's)
CONFIG_FIELDS = {f for f in StudyConfig.__dataclass_fields__ if f not in ("n_trials", "sampler")}


def _resolve(overrides: dict[str, Any]) -> dict[str, Any]:
    model, x = tiny_mlp()
    call: dict[str, Any] = {
        "model": model,
        "example_inputs": x,
        "task": WidthTask(),
        "n_trials": 2,
        "space": SMALL,
        "sampler": "random",
        "progress": False,
        "measure_options": FAST_MEASURE,
        "recover_budget": None,
    }
    for key, value in overrides.items():
        if key == "model" and value == "meta":
            value = _meta_model()
        elif key == "model" and value == "nan":
            value = _nan_model()
        elif key == "example_inputs" and value == "nan":
            value = torch.full((8, 12), float("nan"))
        elif key == "space" and value == "gradient":
            value = SearchSpace(importance=("gradient",))
        elif key in ("sampler", "config_sampler") and value == "object":
            value = optuna.samplers.RandomSampler(seed=0)
        call[key] = value
    return call


def _search(call: dict[str, Any]) -> Any:
    """``search(**call)`` with the StudyConfig fields of ``call`` in a config built here."""
    call = dict(call)
    fields = {k: call.pop(k) for k in CONFIG_FIELDS if k in call}
    if "config_sampler" in call:  # a sampler object put in the config, not the call
        fields["sampler"] = call.pop("config_sampler")
    if "config" not in call:
        call["config"] = StudyConfig(**fields)
    return search(**call)


@pytest.mark.parametrize(
    ("overrides", "error", "words"),
    [pytest.param(o, e, w, id=i) for i, o, e, w in CASES],
)
def test_bad_call_is_refused_before_anything_runs(  # type: ignore[no-untyped-def]
    overrides, error, words, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    call = _resolve(overrides)
    task = call["task"]
    with pytest.raises(error) as info:
        _search(call)
    assert words in str(info.value), str(info.value)
    assert os.listdir(tmp_path) == []  # no study file, journal or anything else
    if isinstance(task, WidthTask):
        assert task.calls == []  # the dense model was not even scored


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_search_space_and_predictor_values_are_checked() -> None:
    with pytest.raises(InputError, match="min_keep='a'"):
        SearchSpace(min_keep="a")  # type: ignore[arg-type]
    with pytest.raises(InvalidRatioError, match="min_keep"):
        SearchSpace(min_keep=0.0)
    with pytest.raises(InputError, match="round_to"):
        SearchSpace(round_to=("8",))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="exclude"):
        SearchSpace(exclude=(3,))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="remove_blocks"):
        SearchSpace(remove_blocks="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="has no field"):
        SearchSpace.from_dict({"tie": "layer", "__class__": "x"})
    with pytest.raises(InputError, match="n_candidates"):
        Predictor(n_candidates=0)


def test_a_good_call_still_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    front = _search(_resolve({"seed": 3}))
    assert len(front.completed) == 2 and (tmp_path / "netsculpt.db").is_file()
    assert isinstance(front, ns.Front)
