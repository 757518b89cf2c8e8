"""Validation selects, test reports: the two scores of every trial, the front, pick, the
table and the HTML report.

``SplitTask`` scores a model differently on its two held-out splits: the validation score
grows with the kept parameter fraction, the test score shrinks with it. A search that
read the test score anywhere (objective, sampler, predictor, pick) would choose differently
from one that reads validation only, so each test below can tell the two apart.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from search_helpers import DENSE_PARAMS, FAST_MEASURE, WidthTask, search_with
from torch import nn

from netsculpt.cli.studies import front_table
from netsculpt.errors import SearchError
from netsculpt.measurement.api import count_params
from netsculpt.reporting.html import front_figure, report
from netsculpt.studies import Predictor, SearchSpace
from netsculpt.studies.front import Front
from netsculpt.studies.objective import Evaluator
from netsculpt.studies.space import build_space
from netsculpt.tasks.base import Task, check_split

SPACE = SearchSpace(tie="layer", step=0.25, importance=("magnitude",), round_to=(1,))


def validation_of(params: int) -> float:
    return params / DENSE_PARAMS


def held_out_test_of(params: int) -> float:
    return 0.25 + 0.5 * (1.0 - params / DENSE_PARAMS)


class SplitTask(Task):
    """Validation: kept parameter fraction; test: falls as the fraction grows."""

    name = "split-task"

    def __init__(self, *, test: Any = held_out_test_of) -> None:
        self.test = test
        self.calls: dict[str, int] = {"validation": 0, "test": 0}

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        split = check_split(split)
        self.calls[split] += 1
        params = count_params(model)
        return validation_of(params) if split == "validation" else self.test(params)

    def example_inputs(self) -> Any:
        from search_helpers import tiny_inputs

        return tiny_inputs()


def run(model, x, task, tmp_path: Path, **kwargs):  # type: ignore[no-untyped-def]
    options: dict[str, Any] = {
        "task": task,
        "n_trials": 10,
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
        "study_name": "splits",
        "sampler": "random",
        "space": SPACE,
        "objectives": ("score", "latency_ms", "params"),
        "progress": False,
        "measure_options": FAST_MEASURE,
        "seed": 0,
    }
    options.update(kwargs)
    return search_with(model, x, **options)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Front:
    from search_helpers import tiny_mlp

    model, x = tiny_mlp()
    return run(model, x, SplitTask(), tmp_path_factory.mktemp("splits"))


def test_every_trial_and_the_baseline_record_both_scores(front: Front) -> None:
    complete = [t for t in front.study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10
    for frozen in complete:
        params = frozen.user_attrs["params"]
        assert frozen.user_attrs["score"] == pytest.approx(validation_of(params))
        assert frozen.user_attrs["test_score"] == pytest.approx(held_out_test_of(params))
        # the objective (what the sampler sees) is the validation score, never the test one
        assert frozen.values[0] == frozen.user_attrs["score"]
        assert frozen.values[0] != pytest.approx(frozen.user_attrs["test_score"])
    for t in front.completed:
        assert t.score == pytest.approx(validation_of(t.params))
        assert t.test_score == pytest.approx(held_out_test_of(t.params))
    base = front.baseline
    assert base is not None
    assert base.score == pytest.approx(1.0) and base.test_score == pytest.approx(0.25)
    assert front.study.user_attrs["netsculpt:baseline"]["test_score"] == pytest.approx(0.25)
    rows = front.rows()
    assert [r["test_score"] for r in rows] == [t.test_score for t in front.trials]
    assert '"test_score"' in front.to_json()


def test_pick_and_knee_read_validation_even_when_test_ranks_the_other_way(
    front: Front,
) -> None:
    pool = list(front.completed)
    by_val = max(pool, key=lambda t: (t.score, -t.latency_ms))
    by_test = max(pool, key=lambda t: t.test_score or 0.0)
    assert by_val.params > by_test.params  # the splits disagree on this study
    picked = front.pick()
    assert picked.score == by_val.score and picked.params == by_val.params
    assert picked.test_score == pytest.approx(held_out_test_of(picked.params))
    assert picked.test_score < by_test.test_score  # a test-read pick would differ
    # limits on the validation score: min_score bounds validation, not test
    floor = sorted({t.score for t in pool})[-2]
    picked = front.pick(min_score=floor)
    assert picked.score >= floor
    # the front is non-dominated on (validation score, latency, params): a trial with a
    # better validation score at no more params is never left off by its test score
    for a in front.trials:
        for b in front.completed:
            assert not (b.score > a.score and b.latency_ms < a.latency_ms and b.params < a.params)
    knee = front.knee()
    assert knee in front.trials


def test_the_front_table_shows_val_and_test_columns(front: Front) -> None:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(front_table(front))
    text = out.getvalue()
    assert "val score" in text and "test score" in text
    for t in front.trials:
        assert f"{t.score:.4f}" in text and f"{t.test_score:.4f}" in text
    assert "0.2500" in text  # the dense model's test score


def test_the_report_plots_validation_and_shows_test(front: Front, tmp_path: Path) -> None:
    page = report(front, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<th>val score</th>" in page and "<th>test score</th>" in page
    assert "validation split" in page and "test split" in page
    for t in front.trials:
        assert f"<td>{t.score:.4f}</td><td class='test'>{t.test_score:.4f}</td>" in page
    base = front.baseline
    assert base is not None
    assert f"<td>{base.score:.4f}</td><td class='test'>{base.test_score:.4f}</td>" in page
    assert f"test score {base.test_score:.4f}" in page  # the dense model's line
    fig = front_figure(front)
    on_front = next(t for t in fig.data if t.name.startswith("Pareto front"))
    # the y axis is the validation score; the hover text carries the test score
    assert sorted(on_front.y) == sorted(t.score for t in front.trials)
    assert "val score" in fig.layout.yaxis.title.text
    by_latency = sorted(front.trials, key=lambda t: t.latency_ms)
    for t, hover in zip(by_latency, on_front.text, strict=True):
        assert f"test score {t.test_score:.4f}" in hover and f"val score {t.score:.4f}" in hover
    dense = next(t for t in fig.data if t.name == "dense model")
    assert f"test score {base.test_score:.4f}" in dense.hovertemplate


def test_the_sampler_and_predictor_never_see_test_scores(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two searches, same seed, test splits that rank sub-networks in opposite ways: every
    trial draws the same parameters and the fronts and picks are the same (latency is not
    an objective here: its timing noise would steer the sampler differently)."""
    model, x = tiny
    options: dict[str, Any] = {
        "objectives": ("score", "params"),  # deterministic: no timing noise
        "sampler": "nsga2",
        "predictor": Predictor(min_trials=4, n_candidates=8),
        "n_trials": 10,
    }
    falling = run(model, x, SplitTask(), tmp_path, study_name="falling", **options)
    rising = run(
        model,
        x,
        SplitTask(test=lambda p: 10.0 * validation_of(p)),
        tmp_path,
        study_name="rising",
        **options,
    )
    a, b = falling.study.trials, rising.study.trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.values for t in a] == [t.values for t in b]
    assert sorted(t.number for t in falling.trials) == sorted(t.number for t in rising.trials)
    assert falling.pick().params == rising.pick().params
    # ... while the test scores they record differ
    assert all(
        x.user_attrs["test_score"] != pytest.approx(y.user_attrs["test_score"])
        for x, y in zip(a, b, strict=True)
    )


def test_cached_plans_carry_the_test_score_of_their_source(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, x = tiny
    coarse = SearchSpace(
        tie="uniform", min_keep=0.5, step=0.5, importance=("magnitude",), round_to=(1,)
    )
    task = SplitTask()
    front = run(model, x, task, tmp_path, space=coarse, n_trials=8)
    cached = [t for t in front.study.trials if "cached_from" in t.user_attrs]
    assert cached
    for t in cached:
        source = front.study.trials[t.user_attrs["cached_from"]]
        assert t.user_attrs["test_score"] == source.user_attrs["test_score"]
    # one validation and one test evaluation per distinct plan, plus the dense model's
    fresh = 8 - len(cached)
    assert task.calls == {"validation": 1 + fresh, "test": 1 + fresh}


def test_a_failing_test_evaluation_keeps_the_trial(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def broken(params: int) -> float:
        if params < DENSE_PARAMS:
            raise RuntimeError("no test data for small models")
        return 0.5

    model, x = tiny
    front = run(model, x, SplitTask(test=broken), tmp_path, n_trials=4)
    trials = front.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    small = [t for t in trials if t.user_attrs["params"] < DENSE_PARAMS]
    assert small
    for t in small:
        assert "test_score" not in t.user_attrs
        assert "no test data" in t.user_attrs["test_fail_reason"]
        assert front.trial(t.number).test_score is None
    assert front.baseline is not None and front.baseline.test_score == 0.5


def test_test_scores_can_be_turned_off(tiny) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.graph.analysis import analyze

    model, x = tiny
    graph = analyze(model, x)
    for flag, calls in ((True, 1), (False, 0)):
        task = SplitTask()
        evaluator = Evaluator(
            model=model,
            example_inputs=x,
            task=task,
            bound=build_space(graph, SPACE),
            objectives=("score", "params"),
            measure_options=FAST_MEASURE,
            graph=graph,
            test_scores=flag,
        )
        base = evaluator.baseline()
        assert task.calls == {"validation": 1, "test": calls}
        assert ("test_score" in base) is flag


def test_a_split_less_task_records_no_test_score(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A task written before splits has one held-out set: scoring it again as "test" would
    only repeat the validation score, so no test score is recorded (and it is not called
    twice per trial)."""
    model, x = tiny
    task = WidthTask()
    front = run(model, x, task, tmp_path, n_trials=4)
    assert all("test_score" not in t.user_attrs for t in front.study.trials)
    assert all(t.test_score is None for t in front.completed)
    assert front.baseline is not None and front.baseline.test_score is None
    fresh = [t for t in front.study.trials if "cached_from" not in t.user_attrs]
    assert len(task.calls) == 1 + len(fresh)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(front_table(front))
    assert "test score" in out.getvalue()
    page = report(front, tmp_path / "old.html").read_text(encoding="utf-8")
    assert "<td class='test'>not recorded</td>" in page
    assert f"test score: not recorded for 4 of {len(front.completed)}" in page


def test_studies_written_before_test_scores_still_load(front: Front, tmp_path: Path) -> None:
    """A copy of the study as an older netsculpt wrote it: no test_score anywhere."""
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(storage=storage, study_name="old", directions=front.study.directions)
    for key, value in front.study.user_attrs.items():
        if key == "netsculpt:baseline":
            value = {k: v for k, v in value.items() if k != "test_score"}
        old.set_user_attr(key, value)
    for t in front.study.trials:
        attrs = {k: v for k, v in t.user_attrs.items() if k != "test_score"}
        old.add_trial(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                values=t.values,
                user_attrs=attrs,
                state=t.state,
            )
        )
    loaded = Front.load(storage, "old")
    assert loaded.baseline is not None and loaded.baseline.test_score is None
    assert all(t.test_score is None for t in loaded.completed)
    assert [t.number for t in loaded.trials] == [t.number for t in front.trials]
    assert loaded.pick().number == front.pick().number
    # a stored test score that is not a number is refused, like any other damaged field
    bad = optuna.create_study(storage=storage, study_name="bad", directions=old.directions)
    for key, value in old.user_attrs.items():
        bad.set_user_attr(key, value)
    t = front.study.trials[0]
    bad.add_trial(
        optuna.trial.create_trial(
            params=t.params,
            distributions=t.distributions,
            values=t.values,
            user_attrs={**t.user_attrs, "test_score": "great"},
        )
    )
    with pytest.raises(SearchError, match="test_score"):
        Front.load(storage, "bad")
    bad2 = optuna.create_study(storage=storage, study_name="bad2", directions=old.directions)
    for key, value in old.user_attrs.items():
        bad2.set_user_attr(key, value)
    bad2.set_user_attr(
        "netsculpt:baseline", {**old.user_attrs["netsculpt:baseline"], "test_score": "x"}
    )
    with pytest.raises(SearchError, match="baseline"):
        Front.load(storage, "bad2")
