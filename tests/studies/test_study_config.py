"""StudyConfig: one checked, JSON-able value carries the options of ns.search, into the study
(where it is read back as data), into resumed runs and into worker processes."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from search_helpers import FAST_MEASURE, WidthTask, tiny_inputs, tiny_mlp
from torch import nn

import netsculpt as ns
from netsculpt.errors import (
    InputError,
    InvalidRatioError,
    NetsculptError,
    SearchError,
    StudyMismatchError,
    UnknownNameError,
)
from netsculpt.recovery.budget import Budget
from netsculpt.studies import Predictor, SearchSpace, StudyConfig
from netsculpt.studies._run import Job
from netsculpt.studies._settings import SETTINGS_ATTR
from netsculpt.studies.front import Front
from netsculpt.studies.storage import StorageSpec, open_storage, resolve_storage
from netsculpt.tasks.base import Split, check_split

SMALL = SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,))

# (fields, error class, message fragment)
BAD: list[tuple[dict[str, Any], type[NetsculptError], str]] = [
    ({"n_trials": 0}, InputError, "StudyConfig: n_trials must be at least 1"),
    ({"n_trials": 2.0}, InputError, "n_trials must be an integer"),
    ({"objectives": ("accuracy",)}, UnknownNameError, "unknown objective 'accuracy'"),
    ({"objectives": ()}, UnknownNameError, "is empty"),
    ({"objectives": ("score", "score")}, UnknownNameError, "repeat"),
    ({"sampler": "annealing"}, UnknownNameError, "unknown sampler 'annealing'"),
    ({"sampler": optuna.samplers.RandomSampler()}, InputError, "goes to ns.search(sampler=...)"),
    ({"workers": 0}, InputError, "workers must be at least 1"),
    ({"workers": 5000}, InputError, "more processes than any machine runs"),
    ({"space": {"tie": "layer"}}, InputError, "or SearchSpace.from_dict(...)"),
    ({"constraints": {"max_speed": 1.0}}, UnknownNameError, "unknown constraint 'max_speed'"),
    ({"constraints": {"max_latency_ms": -1}}, InputError, "positive limit"),
    ({"constraints": [("max_params", 5)]}, InputError, "must be a dict"),
    ({"predictor": Predictor()}, InputError, "go to ns.search(predictor=...)"),
    ({"predictor": "yes"}, InputError, "predictor must be True or False"),
    ({"backend": ""}, InputError, "backend must be a latency backend name"),
    ({"backend": 3}, InputError, "backend must be"),
    ({"seed": -1}, InputError, "seed must be at least 0"),
    ({"seed": "0"}, InputError, "seed must be an integer"),
    ({"recover_budget": 0}, InputError, "no training steps"),
    ({"recover_budget": "soon"}, InputError, "'soon' is not understood"),
    ({"recover_budget": 2.5}, InputError, "budget=2.5"),
    ({"recover": "distill"}, InputError, "recover must be a DistillConfig"),
    ({"recover": {"kind": "distill"}}, InputError, "recover must be a DistillConfig"),
    ({"timeout": 0}, InputError, "timeout must be positive"),
    ({"timeout": math.inf}, InputError, "timeout must be finite"),
    ({"measure_options": {"repeat": 3}}, UnknownNameError, "unknown measure option 'repeat'"),
    ({"measure_options": {"repeats": 0}}, InputError, "repeats must be"),
    ({"measure_options": {"memory": 1}}, InputError, "measure_options['memory']"),
    ({"test_scores": 1}, InputError, "test_scores must be True or False"),
]


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [pytest.param(f, e, w, id=f"{'-'.join(f)}-{i}") for i, (f, e, w) in enumerate(BAD)],
)
def test_a_bad_field_is_refused_when_the_config_is_built(
    fields: dict[str, Any], error: type[NetsculptError], words: str
) -> None:
    with pytest.raises(error) as info:
        StudyConfig(**fields)
    assert words in str(info.value), str(info.value)


def test_values_are_normalised_and_frozen() -> None:
    config = StudyConfig(
        objectives=["score", "macs"],  # type: ignore[arg-type]
        constraints={"max_params": 10_000},
        recover_budget="20s",
        timeout=60,
        measure_options={"repeats": 5},
    )
    assert config.objectives == ("score", "macs")
    assert config.constraints == {"max_params": 10_000.0}
    assert config.recover_budget == Budget(seconds=20.0)
    assert config.timeout == 60.0 and isinstance(config.timeout, float)
    assert config.measure_options == {"warmup": 5, "repeats": 5, "memory": False}
    assert StudyConfig().recover_budget == Budget(steps=30)  # recovery is on by default
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_trials = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="frozen"):
        config.constraints["max_params"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        StudyConfig(10)  # type: ignore[misc]  # keyword-only
    assert hash(config) == hash(StudyConfig.from_json(config.to_json()))
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    "config",
    [
        StudyConfig(),
        StudyConfig(
            n_trials=7,
            objectives=("score", "latency_p90_ms"),
            sampler="tpe",
            workers=3,
            space=SearchSpace(tie="uniform", min_keep=0.5, importance=("taylor", "l1")),
            constraints={"max_latency_ms": 2.5, "min_score": 0.9},
            predictor=True,
            backend="onnxruntime",
            seed=None,
            recover_budget=None,
            timeout=30.0,
            measure_options={"warmup": 1, "repeats": 4, "threads": 1},
            test_scores=False,
        ),
        StudyConfig(recover_budget=ns.Budget(steps=50, seconds=10), recover=ns.TrainConfig()),
        StudyConfig(recover=ns.DistillConfig(alpha=1.0, hidden_weight=0.5, hidden_layers=["fc1"])),
    ],
    ids=["defaults", "every-field", "finetune-recipe", "distill-recipe"],
)
def test_json_round_trip(config: StudyConfig) -> None:
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON values only
    assert StudyConfig.from_dict(data) == config
    assert StudyConfig.from_json(config.to_json()) == config
    assert type(StudyConfig.from_json(config.to_json()).recover) is type(config.recover)


def test_from_dict_refuses_what_is_not_a_config() -> None:
    with pytest.raises(InputError, match="StudyConfig has no field 'trials'"):
        StudyConfig.from_dict({"trials": 5})
    with pytest.raises(InputError, match="needs a dict"):
        StudyConfig.from_dict([("n_trials", 5)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not JSON"):
        StudyConfig.from_json("{n_trials")
    with pytest.raises(InputError, match="is not {steps, seconds}"):
        StudyConfig.from_dict({"recover_budget": {"steps": 3, "minutes": 1}})
    with pytest.raises(UnknownNameError, match="kind='shell'"):
        StudyConfig.from_dict({"recover": {"kind": "shell"}})
    with pytest.raises(InvalidRatioError):
        StudyConfig.from_dict({"space": {"min_keep": 0.0}})


# --------------------------------------------------------------------------- searches


def _run(model: nn.Module, x: Any, task: Any, db: Path, **options: Any) -> Front:
    call: dict[str, Any] = {
        "task": task,
        "storage": f"sqlite:///{db}",
        "study_name": "s",
        "progress": False,
    }
    call.update(options)
    return ns.search(model, x, **call)


def _config(**changes: Any) -> StudyConfig:
    fields: dict[str, Any] = {
        "n_trials": 3,
        "space": SMALL,
        "measure_options": FAST_MEASURE,
        "recover_budget": None,
        "sampler": "random",
    }
    fields.update(changes)
    return StudyConfig(**fields)


def test_shortcuts_replace_config_fields(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    config = _config(n_trials=50, sampler="tpe", predictor=False, seed=4)
    front = _run(
        model,
        x,
        WidthTask(),
        tmp_path / "s.db",
        config=config,
        n_trials=3,
        sampler="random",
        predictor=Predictor(min_trials=2, n_candidates=4),
    )
    assert len(front.completed) == 3  # not 50
    assert front.config == dataclasses.replace(config, n_trials=3, sampler="random", predictor=True)
    # a sampler object is used as given; the config keeps its sampler name
    other = _run(
        model,
        x,
        WidthTask(),
        tmp_path / "o.db",
        config=config,
        n_trials=2,
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    assert len(other.completed) == 2 and other.config.sampler == "tpe"


def test_the_config_is_stored_and_read_back(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    config = _config(constraints={"max_params": 100_000}, seed=9, timeout=600.0)
    front = _run(model, x, WidthTask(), tmp_path / "s.db", config=config)
    stored = json.loads(front.study.user_attrs[SETTINGS_ATTR])
    assert stored["config"] == config.to_dict() and stored["recovered"] is False
    again = Front.load(f"sqlite:///{tmp_path / 's.db'}", "s")
    assert again.config == front.config == config
    assert again.constraints == {"max_params": 100_000.0}


def test_a_rerun_without_config_resumes_with_the_stored_one(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    db = tmp_path / "s.db"
    config = _config(constraints={"max_params": 100_000}, seed=5)
    first = _run(model, x, WidthTask(), db, config=config)
    params = set(first.study.trials[0].params)
    again = _run(model, x, WidthTask(), db, n_trials=5)  # no config: the study's
    assert len(again.completed) == 5
    assert {frozenset(t.params) for t in again.study.trials} == {frozenset(params)}
    assert all("constraints" in t.user_attrs for t in again.study.trials)  # still constrained
    assert again.config == config  # the creator's config stays the study's record
    # an explicit config must match what the study stores
    with pytest.raises(StudyMismatchError, match=r"constraints: stored \{'max_params'"):
        _run(model, x, WidthTask(), db, config=dataclasses.replace(config, constraints={}))
    with pytest.raises(StudyMismatchError, match="recover_budget: stored None, now"):
        _run(model, x, WidthTask(), db, config=dataclasses.replace(config, recover_budget=30))
    # fields that may change per run do not block a resume
    more = _run(model, x, WidthTask(), db, config=dataclasses.replace(config, n_trials=6, seed=1))
    assert len(more.completed) == 6


def test_workers_get_the_config_in_a_typed_job() -> None:
    job = Job(
        config=_config(recover=ns.DistillConfig(alpha=0.9), constraints={"min_score": 0.5}),
        predictor=Predictor(n_candidates=8),
        study_name="s",
        storage=StorageSpec("journal", "/tmp/x.journal", "/tmp/x.journal"),
        model_spec="search_helpers:tiny_mlp",
        task_name="search_helpers:WidthTask",
        signature="0123456789abcdef",
    )
    text = job.to_json()
    assert json.loads(text)["config"] == job.config.to_dict()
    assert Job.from_json(text) == job


# --------------------------------------------------------------------------- recovery


def teacher() -> tuple[nn.Module, torch.Tensor]:
    """The tiny MLP with its output bias shifted so that its three classes are equally
    common on Teach's rows (unshifted, 93 % of them are one class and a gutted model still
    scores 0.9)."""
    model, x = tiny_mlp()
    with torch.no_grad():
        model.out.bias -= model(Teach.rows()).mean(0)
    return model, x


class Teach(ns.Task):
    """Labels are the dense teacher's own decisions, so the dense teacher scores 1.0 and a
    pruned one recovers by learning them again (train rows 0-255, validation 256-319,
    test 320-383)."""

    name = "teach"

    @staticmethod
    def rows() -> torch.Tensor:
        return torch.randn(384, 12, generator=torch.Generator().manual_seed(1))

    def __init__(self) -> None:
        model, _ = teacher()
        self.x = self.rows()
        with torch.no_grad():
            self.y = model(self.x).argmax(1)

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        rows = slice(256, 320) if check_split(split) == "validation" else slice(320, 384)
        with torch.no_grad():
            return float((model(self.x[rows]).argmax(1) == self.y[rows]).float().mean())

    def example_inputs(self) -> torch.Tensor:
        return tiny_inputs()

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randint(0, 256, (batch_size,), generator=g)
            yield self.x[rows], self.y[rows]


def _evaluated(front: Front) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in front.study.trials
        if t.state == TrialState.COMPLETE and "cached_from" not in t.user_attrs
    ]


def test_the_default_search_recovers_each_trial(tmp_path: Path) -> None:
    """The README's plain call: no config, and each trial is distilled before scoring."""
    model, x = teacher()
    front = ns.search(
        model, x, task=Teach(), n_trials=3, storage=f"sqlite:///{tmp_path / 'd.db'}",
        progress=False,
    )  # fmt: skip
    assert front.config.recover_budget == Budget(steps=30)
    assert json.loads(front.study.user_attrs[SETTINGS_ATTR])["recovered"] is True
    evaluated = _evaluated(front)
    assert evaluated and all(t.user_attrs["recover_steps"] == 30 for t in evaluated)
    # the front rebuilds a trial's model the way the trial was made: pruned, then recovered
    best = max(front.completed, key=lambda t: t.score)
    assert Teach().evaluate(best.model) == pytest.approx(best.score)


def test_recovery_raises_scores_and_can_be_turned_off(tmp_path: Path) -> None:
    model, x = teacher()
    space = SearchSpace(tie="uniform", min_keep=0.5, max_keep=0.5, importance=("magnitude",))
    scores = {}
    for budget in (None, 60):
        recipe = ns.DistillConfig(lr=1e-2)
        config = _config(space=space, n_trials=1, recover_budget=budget, recover=recipe)
        front = _run(model, x, Teach(), tmp_path / f"{budget}.db", config=config)
        (trial,) = _evaluated(front)
        assert ("recover_steps" in trial.user_attrs) is (budget is not None)
        scores[budget] = trial.user_attrs["score"]
    assert scores[60] > scores[None] + 0.2  # the same plan, recovered


def test_a_task_without_training_data_is_scored_as_pruned(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    front = _run(model, x, WidthTask(), tmp_path / "w.db", config=_config(recover_budget=30))
    assert all(t.user_attrs["recover_steps"] == 0 for t in _evaluated(front))
    assert json.loads(front.study.user_attrs[SETTINGS_ATTR])["recovered"] is False
    loaded = Front.load(f"sqlite:///{tmp_path / 'w.db'}", "s", model=model)
    loaded.trials[0].model  # noqa: B018 -- rebuilt without asking for a task: nothing to train


def test_the_config_recipe_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netsculpt.recovery import recipe

    seen: list[Any] = []
    real = recipe.finetune

    def spy(model: nn.Module, task: Any, budget: Any, config: Any, **kw: Any) -> nn.Module:
        seen.append(config)
        return real(model, task, budget, config, **kw)

    monkeypatch.setattr(recipe, "finetune", spy)
    model, x = teacher()
    recipe_config = ns.TrainConfig(lr=1e-2, batch_size=16)
    config = _config(n_trials=2, recover_budget=5, recover=recipe_config)
    front = _run(model, x, Teach(), tmp_path / "r.db", config=config)
    assert seen and all(c == recipe_config for c in seen)  # fine-tuned, not distilled
    assert Front.load(f"sqlite:///{tmp_path / 'r.db'}", "s").config.recover == recipe_config
    assert front.config.recover == recipe_config


def test_a_registered_criterion_that_needs_calibration_gets_the_task_batches(
    tiny, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.pruning import importance

    got: list[int] = []

    @ns.register_importance("test-needs-batches", needs_calib=True)
    def needs_batches(group: Any, ctx: Any) -> np.ndarray:
        assert ctx.calib is not None  # planning refuses it without batches anyway
        got.append(len(ctx.calib))
        return importance.get_importance("magnitude")(group, ctx)

    try:
        model, x = tiny
        space = SearchSpace(tie="layer", importance=("test-needs-batches",), calib_batches=3)
        front = _run(model, x, WidthTask(), tmp_path / "c.db", config=_config(space=space))
        assert len(front.completed) == 3 and not front.failed
        assert got and set(got) == {1}  # WidthTask has no training data: its example inputs
        got.clear()
        front = _run(model, x, Teach(), tmp_path / "t.db", config=_config(space=space))
        assert len(front.completed) == 3 and set(got) == {3}  # three training batches
    finally:
        importance.IMPORTANCE.pop("test-needs-batches", None)
        importance._INFO.pop("test-needs-batches", None)


# --------------------------------------------------------------------------- as data


def _study_with(tmp_path: Path, settings: Any) -> str:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    storage = open_storage(resolve_storage(url), heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="h", directions=["maximize"])
    study.set_user_attr(
        SETTINGS_ATTR, settings if isinstance(settings, str) else json.dumps(settings)
    )
    return url


def _stored(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": _config(objectives=("score",)).to_dict(),
        "signature": "0123456789abcdef",
        "model_spec": None,
        "task": "width-task",
        "version": "0.1.0",
        "recovered": False,
    }
    out.update(changes)
    return out


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (_stored(config=[1, 2]), "stores invalid netsculpt config: [1, 2] is not a StudyConfig"),
        (_stored(config={"n_trials": -1}), "n_trials must be at least 1"),
        (_stored(config={"shell": "rm -rf /"}), "StudyConfig has no field 'shell'"),
        (_stored(config={"recover": {"kind": "x"}}), "kind='x'"),
        (_stored(config={"sampler": "s" * 50_000}), "unknown sampler"),
        (_stored(recovered="yes"), "recovered: 'yes' is not true or false"),
        (_stored(signature="../../etc"), "is not a space signature"),
    ],
    ids=["not-a-dict", "bad-value", "unknown-field", "bad-recipe", "huge-name", "flag", "sig"],
)
def test_a_stored_config_is_checked_as_data(
    tmp_path: Path, settings: dict[str, Any], words: str
) -> None:
    url = _study_with(tmp_path, settings)
    with pytest.raises(SearchError) as info:
        Front.load(url, "h")
    assert words in str(info.value) and len(str(info.value)) < 1000, str(info.value)[:300]


def test_settings_written_before_configs_read_as_a_config(tmp_path: Path) -> None:
    flat = {
        "objectives": ["score"],
        "signature": "0123456789abcdef",
        "space": SMALL.to_dict(),
        "backend": "torch",
        "constraints": {"max_params": 5000},
        "recover_budget": 200,
        "model_spec": None,
        "task": "width-task",
        "version": "0.5.0",
    }
    front = Front.load(_study_with(tmp_path, flat), "h")
    assert front.config == StudyConfig(
        objectives=("score",), space=SMALL, constraints={"max_params": 5000}, recover_budget=200
    )
    (tmp_path / "h.db").unlink()
    flat["recover_budget"] = None  # then: no recovery (not today's default of 30 steps)
    assert Front.load(_study_with(tmp_path, flat), "h").config.recover_budget is None
