"""ns.search over a trained super-network: each trial is a slice (batch norm recalibrated),
scored, timed and stored; nothing is trained; the study knows it is a super-network study,
refuses another super-network on resume, and Front rebuilds the very same models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from search_helpers import FAST_MEASURE
from supernet_search_helpers import AgreementTask, ConvNet, convnet, images
from torch import nn

import netsculpt as ns
from netsculpt.errors import InputError, SearchError, StudyMismatchError, UnknownNameError
from netsculpt.studies import Predictor, SearchSpace, StudyConfig
from netsculpt.studies.front import Front
from netsculpt.supernets.supernet import recalibrate_batchnorm


@pytest.fixture(scope="module")
def made() -> tuple[Any, AgreementTask]:
    torch.manual_seed(0)
    model = ConvNet()
    # batch-norm statistics of the training batches the search recalibrates on: the largest
    # sub-network then labels every image as the model does
    recalibrate_batchnorm(model, AgreementTask(model).calib_batches(2))
    supernet = ns.elastic(model, images(4, 3), ns.ElasticConfig(keep=(0.5, 0.75, 1.0), depth=True))
    return supernet, AgreementTask(model)


def _config(**kwargs: Any) -> StudyConfig:
    fields: dict[str, Any] = {
        "n_trials": 6,
        "sampler": "random",
        "measure_options": FAST_MEASURE,
        "bn_calib_batches": 2,
    }
    fields.update(kwargs)
    return StudyConfig(**fields)


def _search(supernet: Any, task: Any, tmp_path: Path, **kwargs: Any) -> Front:
    options: dict[str, Any] = {
        "task": task,
        "config": _config(),
        "storage": f"sqlite:///{tmp_path / 'sn.db'}",
        "study_name": "sn",
        "progress": False,
    }
    options.update(kwargs)
    return ns.search(supernet, **options)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_trials_are_recalibrated_slices_scored_and_timed(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    before = _state(supernet)
    front = _search(supernet, task, tmp_path)
    # nothing was trained: every weight and batch-norm statistic is as it was
    after = supernet.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    assert front.kind == "supernet" and len(front.completed) == 6
    calib = task.calib_batches(2)
    names = [c.name for c in supernet.space.choices]
    for t in front.completed:
        frozen = front.study.trials[t.number]
        assert sorted(frozen.params) == sorted(names)
        assert supernet.space.check(frozen.params) == frozen.params == dict(t.arch)
        small = supernet.extract(t.arch, calib=calib)
        assert t.score == pytest.approx(task.evaluate(small))
        assert t.test_score == pytest.approx(task.evaluate(small, "test"))
        assert t.params == sum(p.numel() for p in small.parameters())
        assert t.latency_ms > 0 and t.latency_p90_ms >= t.latency_ms and t.macs > 0
        assert "recover_steps" not in frozen.user_attrs
        assert ns.Plan.from_json(frozen.user_attrs["plan"]).meta["elastic"]["arch"] == t.arch
    base = front.baseline
    assert base is not None
    dense = supernet.extract(supernet.largest(), calib=calib)
    assert base.score == pytest.approx(task.evaluate(dense)) == 1.0
    assert (
        len({t.params for t in front.completed}) > 1 and min(t.score for t in front.completed) < 1
    )
    assert base.params == sum(p.numel() for p in dense.parameters())
    # the study says what it is: a super-network study, its elastic config, no recovery
    settings = json.loads(front.study.user_attrs["netsculpt:settings"])
    assert settings["kind"] == "supernet" and settings["recovered"] is False
    assert settings["elastic"] == supernet.config.to_dict()
    assert settings["config"]["recover_budget"] is None  # the default budget is dropped
    assert front.config.recover_budget is None and front.elastic == supernet.config.to_dict()


def test_resume_reuses_results_and_refuses_another_space(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    storage = f"sqlite:///{tmp_path / 'sn.db'}"
    front = _search(supernet, task, tmp_path, config=_config(n_trials=3))
    first = front.completed[0]
    # a queued trial with a sub-network already scored is answered from the study
    optuna.load_study(study_name="sn", storage=storage).enqueue_trial(dict(first.arch))
    evaluated = task.evaluated
    front = _search(supernet, task, tmp_path, config=None, n_trials=4)
    assert len(front.completed) == 4
    again = front.study.trials[3]
    assert again.params == dict(first.arch) and again.user_attrs["cached_from"] == first.number
    assert again.user_attrs["score"] == first.score
    assert task.evaluated == evaluated  # not scored again
    # another space (other keep fractions): refused, naming what differs
    torch.manual_seed(0)
    other = ns.elastic(ConvNet(), images(4, 3), ns.ElasticConfig(keep=(0.5, 1.0), depth=True))
    with pytest.raises(StudyMismatchError, match="signature") as err:
        _search(other, task, tmp_path, n_trials=5)
    assert "elastic" in str(err.value)
    assert len(optuna.load_study(study_name="sn", storage=storage).trials) == 4
    # a pruning search cannot continue a super-network study either
    model, x = ConvNet(), images(4, 3)
    space = SearchSpace(importance=("magnitude",), round_to=(1,))
    with pytest.raises(StudyMismatchError, match="kind: stored 'supernet', now 'prune'"):
        ns.search(
            model,
            x,
            task=task,
            config=_config(space=space, recover_budget=None),
            storage=storage,
            study_name="sn",
            progress=False,
        )


def test_front_load_rebuilds_trials_from_the_supernet(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    searched = _search(supernet, task, tmp_path, config=_config(n_trials=4))
    storage = f"sqlite:///{tmp_path / 'sn.db'}"
    front = Front.load(storage, "sn", model=supernet, task=task)
    calib = task.calib_batches(2)
    x = images(8, 9)
    for t in front.completed:
        assert t.arch == searched.trial(t.number).arch
        rebuilt = t.model
        expected = supernet.extract(t.arch, calib=calib)
        got, want = rebuilt.state_dict(), expected.state_dict()
        assert list(got) == list(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), expected(x))
        assert task.evaluate(rebuilt) == pytest.approx(t.score)
    assert json.loads(front.to_json())["trials"][0]["arch"] == dict(front.trials[0].arch)
    # without the super-network the study is readable, but models cannot be made
    bare = Front.load(storage, "sn")
    assert bare.kind == "supernet" and bare.trial(0).arch == front.trial(0).arch
    with pytest.raises(SearchError, match=r"model=supernet"):
        _ = bare.trial(0).model
    # with batch norm, the training batches of the task are needed too (the study names
    # its task, which is not registered here)
    with pytest.raises(UnknownNameError, match="task=your_task"):
        _ = Front.load(storage, "sn", model=supernet).trial(0).model
    with pytest.raises(InputError, match="super-network search"):
        Front.load(storage, "sn", model=ConvNet())
    torch.manual_seed(0)
    other = ns.elastic(ConvNet(), images(4, 3), ns.ElasticConfig(keep=(0.5, 1.0)))
    with pytest.raises(StudyMismatchError, match="space signature"):
        Front.load(storage, "sn", model=other)


def test_report_marks_a_supernet_study(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    front = _search(supernet, task, tmp_path, config=_config(n_trials=3))
    page = ns.report(front, tmp_path / "r.html").read_text()
    assert "super-network search: trials are slices of one trained super-network, no " in page
    chosen = front.knee()
    assert f"Sub-network (arch) of trial {chosen.number}" in page
    for name, value in chosen.arch.items():
        shown = ("kept" if value else "dropped") if isinstance(value, bool) else str(value)
        assert f"{name} = {shown}" in page or f"<td>{shown}</td>" in page
        assert name in page


def test_predictor_screens_archs(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.studies._supernet import SupernetSpace

    supernet, task = made
    space = SupernetSpace.of(supernet)
    assert space.encode(supernet.largest()) == [1.0] * len(supernet.space)
    small = space.encode(supernet.smallest())
    assert small == [0.5, 0.5, 0.0]  # widths over their largest option, blocks kept or not
    front = _search(
        supernet,
        task,
        tmp_path,
        config=_config(n_trials=6),
        predictor=Predictor(min_trials=3, n_candidates=8, model="random_forest"),
    )
    assert len(front.completed) == 6
    screened = [t for t in front.study.trials if "netsculpt:predicted" in t.system_attrs]
    assert screened  # trials after the third were chosen by the surrogate


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"space": SearchSpace(tie="layer")}, r"space=SearchSpace\(tie='layer'\)"),
        ({"recover_budget": 10}, "recover_budget=None"),
        ({"recover": ns.DistillConfig()}, "recover=None"),
    ],
)
def test_options_that_do_not_apply_are_refused(made, tmp_path, fields, message) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    with pytest.raises(InputError, match=message):
        _search(supernet, task, tmp_path, config=_config(**fields))
    assert not (tmp_path / "sn.db").exists()  # refused before a study was made


def test_the_supernet_travels_as_its_saved_files(made) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.studies._supernet import (
        load_supernet_files,
        supernet_files,
        supernet_signature,
    )

    supernet, task = made
    files = supernet_files(supernet)
    assert sorted(files) == ["elastic.json", "inputs.safetensors", "supernet.safetensors"]
    base = ConvNet()  # what a worker gets: a model of the architecture (weights replaced)
    loaded = load_supernet_files(files, base=base)
    assert supernet_signature(loaded) == supernet_signature(supernet)
    arch = supernet.smallest()
    calib = task.calib_batches(2)
    x = images(8, 9)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.extract(arch, calib=calib)(x), supernet.extract(arch, calib=calib)(x)
        )
    with pytest.raises(SearchError, match="plain file name"):
        load_supernet_files({"../elastic.json": b"{}"}, base=ConvNet())


@pytest.mark.slow
def test_worker_processes_search_the_same_supernet(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    front = _search(
        supernet,
        task,
        tmp_path,
        config=_config(n_trials=4, workers=2),
        storage=str(tmp_path / "sn.journal"),
    )
    assert len(front.completed) == 4
    pids = {t.user_attrs["worker"]["pid"] for t in front.study.trials}
    assert len(pids) == 2 and os.getpid() not in pids
    calib = task.calib_batches(2)
    for t in front.completed:
        assert t.score == pytest.approx(task.evaluate(supernet.extract(t.arch, calib=calib)))


def test_cli_searches_a_supernet_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from netsculpt.cli.studies import app

    model, x = convnet()
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5, 1.0), depth=True))
    folder = ns.save_supernet(
        supernet, tmp_path / "supernet", base_factory="supernet_search_helpers:convnet"
    )
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    common = ["--trials", "3", "--storage", storage, "--study", "cli", "--sampler", "random"]
    runner = CliRunner()
    search = ["search", str(folder), "--task", "supernet_search_helpers:make_task", *common]
    # the folder names a factory: it runs only when trusted (or --base builds the model)
    refused = runner.invoke(app, [*search, "--no-progress"])
    assert refused.exit_code == 2 and "UntrustedCodeError" in refused.output
    assert "--task" in runner.invoke(app, ["search", str(folder), *common]).output
    result = runner.invoke(
        app, [*search, "--no-progress", "--base", "supernet_search_helpers:convnet"]
    )
    assert result.exit_code == 0, result.output
    assert "super-network search: trials are slices" in result.output
    assert "vs the largest sub-network" in result.output
    front = Front.load(storage, "cli")
    assert front.kind == "supernet" and len(front.completed) == 3
    assert front.config.recover_budget is None
    listed = runner.invoke(app, ["pareto", "--study", "cli", "--storage", storage])
    assert listed.exit_code == 0 and "super-network search" in listed.output
    out = tmp_path / "small"
    exported = runner.invoke(
        app,
        ["export", "--study", "cli", "--storage", storage, "--model", str(folder)]
        + ["--trust-code", "--out", str(out)],
    )
    assert exported.exit_code == 0, exported.output
    small = ns.load(out, trust_code=True)
    knee = front.knee()
    assert sum(p.numel() for p in small.parameters()) == knee.params


def test_without_batch_norm_no_training_data_is_needed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from search_helpers import WidthTask, tiny_mlp

    monkeypatch.chdir(tmp_path)  # the default storage, sqlite:///netsculpt.db, lands here
    model, x = tiny_mlp()
    supernet = ns.elastic(model, x, ns.ElasticConfig(keep=(0.5, 1.0)))
    task = WidthTask()  # no training data, evaluate takes no split
    front = ns.search(supernet, task=task, config=_config(n_trials=3), progress=False)
    assert front.study_name.startswith("netsculpt-supernet-tinymlp-")
    assert all(t.test_score is None for t in front.completed)
    # nothing to recalibrate: Front rebuilds trials from the super-network alone
    again = Front.load(None, front.study_name, model=supernet)
    for t in again.completed:
        assert sum(p.numel() for p in t.model.parameters()) == t.params
        assert t.score == pytest.approx(task.evaluate(supernet.extract(t.arch)))


def test_edited_supernet_settings_are_refused(made, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supernet, task = made
    front = _search(supernet, task, tmp_path, config=_config(n_trials=1))
    settings = json.loads(front.study.user_attrs["netsculpt:settings"])
    for field, value, words in [
        ("kind", "elastic", "kind"),
        ("elastic", None, "kind 'supernet' with elastic None"),
        ("elastic", {"keep": [2.0]}, "not a valid ElasticConfig"),
    ]:
        front.study.set_user_attr("netsculpt:settings", json.dumps({**settings, field: value}))
        with pytest.raises(SearchError, match=words):
            Front.load(f"sqlite:///{tmp_path / 'sn.db'}", "sn")
