"""Crafted study databases: each is refused with a NetsculptError, and nothing it names runs.

A study is something users download and share. Each case below writes a study (SQLite, or
an Optuna journal file) that looks like a netsculpt study but carries one hostile or broken
field: a model spec naming a Python file or an importable module that would leave a canary
file behind, a task import string, garbage or wrongly typed settings, a settings JSON that
is nested deeply, huge or not an object, bad trial records, a damaged storage. Each is
opened through the Python API (``Front.load``, ``.model``, ``ns.search`` resuming it) and
through the command line (``pareto``, ``export``, ``report``), and must fail with a
``NetsculptError`` subclass (exit code 2 on the command line) while no canary appears and
no crafted module is imported.
"""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from search_helpers import FAST_MEASURE, WidthTask, tiny_mlp
from typer.testing import CliRunner

import netsculpt as ns
from netsculpt.cli.studies import app
from netsculpt.errors import (
    NetsculptError,
    SearchError,
    StorageError,
    StudyMismatchError,
    UntrustedCodeError,
)
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies._settings import SETTINGS_ATTR
from netsculpt.studies.api import search
from netsculpt.studies.front import Front
from netsculpt.studies.storage import open_storage, resolve_storage

NAME = "hostile"
EVIL_MODULE = "netsculpt_evil_canary_mod"
SPACE = SearchSpace(tie="layer", importance=("magnitude",), round_to=(1,))


@pytest.fixture
def lair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a hostile Python file and an importable hostile module, both writing
    the canary file ``canary`` when imported, on sys.path."""
    canary = tmp_path / "canary"
    body = (
        "from pathlib import Path\n"
        f"Path({str(canary)!r}).write_text('ran')\n"
        "def build():\n"
        f"    Path({str(canary)!r}).write_text('called')\n"
        "class Task:\n"
        "    pass\n"
    )
    (tmp_path / "evil.py").write_text(body)
    (tmp_path / f"{EVIL_MODULE}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _settings(**changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "objectives": ["score", "latency_ms", "params"],
        "signature": "0123456789abcdef",
        "space": SPACE.to_dict(),
        "backend": "torch",
        "constraints": {},
        "recover_budget": None,
        "model_spec": None,
        "task": "width-task",
        "version": "0.5.0",
    }
    settings.update(changes)
    return settings


@functools.cache
def _plan_json() -> str:
    model, x = tiny_mlp()
    return ns.plan(model, x, ratio=0.25).to_json()


def _good_trial() -> optuna.trial.FrozenTrial:
    attrs = {
        "plan": _plan_json(),
        "plan_hash": "0" * 20,
        "score": 0.8,
        "latency_ms": 0.05,
        "latency_p90_ms": 0.06,
        "params": 700,
        "macs": 6000,
    }
    return optuna.trial.create_trial(
        values=[0.8, 0.05, 700],
        params={"keep:fc1": 0.75},
        distributions={"keep:fc1": FloatDistribution(0.25, 1.0, step=0.05)},
        user_attrs=attrs,
    )


BASELINE = {"score": 1.0, "latency_ms": 0.1, "latency_p90_ms": 0.1, "params": 1000, "macs": 9000}


_TEMPLATE: list[Path] = []


def _empty_database(path: Path) -> None:
    """Copy an empty Optuna SQLite database to ``path`` (creating the tables takes ~0.5 s)."""
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="netsculpt-hostile-"))
        opened = open_storage(resolve_storage(f"sqlite:///{folder / 'empty.db'}"), heartbeat=False)
        opened.engine.dispose()  # type: ignore[attr-defined]
        _TEMPLATE.append(folder / "empty.db")
    shutil.copyfile(_TEMPLATE[0], path)


def _write(
    folder: Path,
    *,
    attrs: dict[str, Any] | None = None,
    trial_attrs: dict[str, Any] | None = None,
    kind: str = "sqlite",
    directions: int = 3,
) -> str:
    """A study named ``NAME`` with the given user attrs and one trial; returns the storage."""
    storage = f"sqlite:///{folder / 's.db'}" if kind == "sqlite" else str(folder / "s.journal")
    if kind == "sqlite":
        _empty_database(folder / "s.db")
    opened = open_storage(resolve_storage(storage), heartbeat=False)
    study = optuna.create_study(
        storage=opened,
        study_name=NAME,
        directions=["maximize", "minimize", "minimize"][:directions],
    )
    attrs = (
        {SETTINGS_ATTR: json.dumps(_settings()), "netsculpt:baseline": BASELINE}
        if attrs is None
        else attrs
    )
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    trial = _good_trial()
    for key, value in (trial_attrs or {}).items():
        trial.user_attrs[key] = value
    if directions == 3:
        study.add_trial(trial)
    return storage


def _settings_attrs(**changes: Any) -> dict[str, Any]:
    return {SETTINGS_ATTR: json.dumps(_settings(**changes)), "netsculpt:baseline": BASELINE}


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _raw_sql(folder: Path, sql: str, params: tuple[Any, ...] = ()) -> str:
    storage = _write(folder)
    with sqlite3.connect(folder / "s.db") as db:
        db.execute(sql, params)
    return storage


def _garbage_journal(folder: Path) -> str:
    path = folder / "s.journal"
    path.write_text('{"op_code": 0, "worker_id": "x", "study_name": "hostile"}\n{{{ not json\n')
    return str(path)


def _not_a_database(folder: Path) -> str:
    (folder / "s.db").write_bytes(b"\x00\x01netsculpt? no." * 100)
    return f"sqlite:///{folder / 's.db'}"


Maker = Callable[[Path], str]

# (id, how to write the storage, what fails: "load" (opening the study) or "model"
# (materialising a trial), the expected error class, a message fragment)
CASES: list[tuple[str, Maker, str, type[NetsculptError], str]] = [
    # -- code named by the study ------------------------------------------------------------
    (
        "model-spec-py-file",
        lambda d: _write(d, attrs=_settings_attrs(model_spec=f"{d / 'evil.py'}:build")),
        "model",
        UntrustedCodeError,
        "never runs a file",
    ),
    (
        "model-spec-relative-py-file",
        lambda d: _write(d, attrs=_settings_attrs(model_spec="evil.py:build")),
        "model",
        UntrustedCodeError,
        "never runs a file",
    ),
    (
        "model-spec-parent-path",
        lambda d: _write(d, attrs=_settings_attrs(model_spec="../x/evil:build")),
        "model",
        UntrustedCodeError,
        "never runs a file",
    ),
    (
        "model-spec-module-factory",
        lambda d: _write(d, attrs=_settings_attrs(model_spec=f"{EVIL_MODULE}:build")),
        "model",
        UntrustedCodeError,
        "trust_code=True",
    ),
    (
        "model-spec-os-abort",
        lambda d: _write(d, attrs=_settings_attrs(model_spec="os:abort")),
        "model",
        UntrustedCodeError,
        "'os:abort'",
    ),
    (
        "model-spec-not-dotted",
        lambda d: _write(d, attrs=_settings_attrs(model_spec=f"{EVIL_MODULE}:build; rm -rf")),
        "model",
        UntrustedCodeError,
        "neither a built-in name",
    ),
    (
        "legacy-model-spec-module",
        lambda d: _write(
            d,
            attrs={
                **{f"netsculpt:{k}": v for k, v in _settings().items()},
                "netsculpt:model_spec": f"{EVIL_MODULE}:build",
            },
        ),
        "model",
        UntrustedCodeError,
        "trust_code=True",
    ),
    (
        "task-import-string",
        lambda d: _write(
            d,
            attrs=_settings_attrs(
                model_spec="search_helpers:tiny_mlp_untrusted_never_imported",
                task=f"{EVIL_MODULE}:Task",
                recover_budget=10,
            ),
        ),
        "task",
        UntrustedCodeError,
        f"'{EVIL_MODULE}:Task'",
    ),
    (
        "task-file-path",
        lambda d: _write(d, attrs=_settings_attrs(task="./evil.py:Task", recover_budget=10)),
        "task",
        UntrustedCodeError,
        "not 'package.module:factory'",
    ),
    # -- settings that are not what netsculpt writes ------------------------------------
    (
        "settings-a-list",
        lambda d: _write(d, attrs={SETTINGS_ATTR: "[1, 2, 3]"}),
        "load",
        SearchError,
        "not an object",
    ),
    (
        "settings-deeply-nested",
        lambda d: _write(d, attrs={SETTINGS_ATTR: '{"objectives": ' + _deep(5000) + "}"}),
        "load",
        SearchError,
        "nested too deeply",
    ),
    (
        "settings-huge",
        lambda d: _write(d, attrs={SETTINGS_ATTR: json.dumps(_settings(task="t" * 2_000_000))}),
        "load",
        SearchError,
        "characters long",
    ),
    (
        "settings-not-json",
        lambda d: _write(d, attrs={SETTINGS_ATTR: "{objectives: score"}),
        "load",
        SearchError,
        "not JSON",
    ),
    (
        "settings-not-text",
        lambda d: _write(d, attrs={SETTINGS_ATTR: _settings()}),
        "load",
        SearchError,
        "not JSON text",
    ),
    (
        "unknown-objective",
        lambda d: _write(d, attrs=_settings_attrs(objectives=["score", "accuracy", "params"])),
        "load",
        SearchError,
        "unknown objective 'accuracy'",
    ),
    (
        "objectives-a-string",
        lambda d: _write(d, attrs=_settings_attrs(objectives="score")),
        "load",
        SearchError,
        "not a list of objective names",
    ),
    (
        "objectives-not-unique",
        lambda d: _write(d, attrs=_settings_attrs(objectives=["score", "score"])),
        "load",
        SearchError,
        "repeats an objective",
    ),
    (
        "constraint-not-a-number",
        lambda d: _write(d, attrs=_settings_attrs(constraints={"max_latency_ms": "fast"})),
        "load",
        SearchError,
        "'fast' is not a number",
    ),
    (
        "constraint-unknown",
        lambda d: _write(d, attrs=_settings_attrs(constraints={"__import__": 1})),
        "load",
        SearchError,
        "unknown constraint",
    ),
    (
        "space-wrong-types",
        lambda d: _write(d, attrs=_settings_attrs(space={"tie": "stage", "min_keep": "a lot"})),
        "load",
        SearchError,
        "not a valid SearchSpace",
    ),
    (
        "space-unknown-field",
        lambda d: _write(d, attrs=_settings_attrs(space={"__class__": "os.system"})),
        "load",
        SearchError,
        "no field",
    ),
    (
        "budget-negative",
        lambda d: _write(d, attrs=_settings_attrs(recover_budget=-5)),
        "load",
        SearchError,
        "recover_budget",
    ),
    (
        "signature-not-hex",
        lambda d: _write(d, attrs=_settings_attrs(signature="<script>")),
        "load",
        SearchError,
        "signature",
    ),
    (
        "model-spec-wrong-type",
        lambda d: _write(d, attrs=_settings_attrs(model_spec={"factory": "os:abort"})),
        "load",
        SearchError,
        "model_spec",
    ),
    (
        "legacy-objectives-garbage",
        lambda d: _write(d, attrs={"netsculpt:objectives": {"a": 1}}),
        "load",
        SearchError,
        "objectives",
    ),
    (
        "baseline-garbage",
        lambda d: _write(
            d, attrs={SETTINGS_ATTR: json.dumps(_settings()), "netsculpt:baseline": "fast"}
        ),
        "load",
        SearchError,
        "baseline",
    ),
    (
        "baseline-wrong-types",
        lambda d: _write(
            d,
            attrs={
                SETTINGS_ATTR: json.dumps(_settings()),
                "netsculpt:baseline": {**BASELINE, "params": "many"},
            },
        ),
        "load",
        SearchError,
        "'many' is not a count",
    ),
    (
        "not-a-netsculpt-study",
        lambda d: _write(d, attrs={"owner": "someone"}),
        "load",
        SearchError,
        "not created by netsculpt",
    ),
    # -- trial records ----------------------------------------------------------------------
    (
        "trial-plan-garbage",
        lambda d: _write(d, trial_attrs={"plan": "rm -rf /"}),
        "load",
        SearchError,
        "trial 0",
    ),
    (
        "trial-plan-deeply-nested",
        lambda d: _write(d, trial_attrs={"plan": _deep(100_000)}),
        "load",
        SearchError,
        "trial 0",
    ),
    (
        "trial-score-a-string",
        lambda d: _write(d, trial_attrs={"score": "0.9"}),
        "load",
        SearchError,
        "stored score '0.9'",
    ),
    (
        "trial-params-negative",
        lambda d: _write(d, trial_attrs={"params": -7}),
        "load",
        SearchError,
        "stored params -7",
    ),
    (
        "trial-constraints-garbage",
        lambda d: _write(d, trial_attrs={"constraints": "yes"}),
        "load",
        SearchError,
        "constraint values",
    ),
    # -- damaged storages -------------------------------------------------------------------
    (
        "attr-json-nested-in-database",
        lambda d: _raw_sql(
            d,
            "UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
            (_deep(200_000), "netsculpt:baseline"),
        ),
        "load",
        SearchError,
        "cannot be decoded",
    ),
    (
        "trial-attr-not-json-in-database",
        lambda d: _raw_sql(
            d,
            "UPDATE trial_user_attributes SET value_json = ? WHERE key = ?",
            ("{not json", "score"),
        ),
        "load",
        SearchError,
        "cannot be decoded",
    ),
    ("journal-garbage", _garbage_journal, "load", StorageError, "journal"),
    ("sqlite-not-a-database", _not_a_database, "load", StorageError, "cannot open"),
    (
        "journal-settings-list",
        lambda d: _write(d, attrs={SETTINGS_ATTR: "[]"}, kind="journal"),
        "load",
        SearchError,
        "not an object",
    ),
    (
        "journal-model-spec-module",
        lambda d: _write(
            d, attrs=_settings_attrs(model_spec=f"{EVIL_MODULE}:build"), kind="journal"
        ),
        "model",
        UntrustedCodeError,
        "trust_code=True",
    ),
]

PARAMS = [pytest.param(m, op, e, w, id=i) for i, m, op, e, w in CASES]


def _nothing_ran(lair: Path) -> None:
    assert not (lair / "canary").exists(), (lair / "canary").read_text()
    assert EVIL_MODULE not in sys.modules
    assert not any(name.startswith("_netsculpt_factory_") for name in sys.modules)


def _api(storage: str, op: str, *, trust_code: bool = False) -> None:
    if op == "load":
        Front.load(storage, NAME)
    elif op == "model":
        _ = Front.load(storage, NAME, trust_code=trust_code).knee().model
    else:  # the model is the user's; recovery needs the task the study names
        model, _ = tiny_mlp()
        _ = Front.load(storage, NAME, model=model, trust_code=trust_code).knee().model


@pytest.mark.parametrize(("make", "op", "error", "words"), PARAMS)
def test_python_api_refuses(make, op, error, words, lair) -> None:  # type: ignore[no-untyped-def]
    storage = make(lair)
    with pytest.raises(error) as info:
        _api(storage, op)
    assert words in str(info.value), str(info.value)
    _nothing_ran(lair)


@pytest.mark.parametrize(("make", "op", "error", "words"), PARAMS)
def test_command_line_refuses(make, op, error, words, lair) -> None:  # type: ignore[no-untyped-def]
    storage = make(lair)
    runner = CliRunner()
    out = lair / "exported"
    export = ["export", "--study", NAME, "--storage", storage, "--out", str(out)]
    if op == "task":
        export += ["--model", "search_helpers:tiny_mlp"]  # typed by the user: trusted
    commands = [export]
    if op == "load":
        commands += [
            ["pareto", "--study", NAME, "--storage", storage],
            ["report", "--study", NAME, "--storage", storage, "--out", str(lair / "r.html")],
        ]
    for command in commands:
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command[0], result.output, result.exception)
        assert error.__name__ in result.output, result.output
        assert not out.exists() and not (lair / "r.html").exists()
    _nothing_ran(lair)


def test_there_are_many_hostile_studies() -> None:
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "spec", [lambda d: f"{d / 'evil.py'}:build", lambda d: "evil.py:build", lambda d: "./evil:b"]
)
def test_a_stored_file_is_never_run_even_when_trusted(spec, lair) -> None:  # type: ignore[no-untyped-def]
    storage = _write(lair, attrs=_settings_attrs(model_spec=spec(lair)))
    with pytest.raises(UntrustedCodeError, match="even with trust_code=True"):
        _api(storage, "model", trust_code=True)
    result = CliRunner().invoke(
        app,
        ["export", "--study", NAME, "--storage", storage, "--out", "x", "--trust-code"],
    )
    assert result.exit_code == 2 and "UntrustedCodeError" in result.output
    _nothing_ran(lair)


def test_trust_code_runs_a_stored_factory_and_task(lair) -> None:  # type: ignore[no-untyped-def]
    storage = _write(
        lair,
        attrs=_settings_attrs(
            model_spec="search_helpers:tiny_mlp", task="search_helpers:WidthTask"
        ),
    )
    with pytest.raises(UntrustedCodeError):
        _ = Front.load(storage, NAME).knee().model
    front = Front.load(storage, NAME, trust_code=True)
    small = front.knee().model
    assert ns.measure(small, tiny_mlp()[1], repeats=1, warmup=0).params > 0
    assert type(front._materialiser.task()).__name__ == "WidthTask"
    # the same spec typed by the user needs no opt-in
    typed = Front.load(storage, NAME, model="search_helpers:tiny_mlp")
    assert typed.knee().model is not None


def test_a_builtin_model_name_needs_no_opt_in() -> None:
    from netsculpt.studies._specs import check_stored_model_spec

    assert check_stored_model_spec("digits", study="s", trust_code=False) == "digits"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"objectives": ["score", "macs", "params"]}, "objectives"),
        ({"space": {"tie": "uniform"}}, "space"),
        ({"signature": "ffffffffffffffff"}, "signature"),
        ({"model_spec": f"{EVIL_MODULE}:build", "objectives": "score"}, "objectives"),
    ],
)
def test_resuming_a_hostile_study_is_refused(changes, words, lair) -> None:  # type: ignore[no-untyped-def]
    storage = _write(lair, attrs=_settings_attrs(**changes))
    model, x = tiny_mlp()
    task = WidthTask()
    with pytest.raises(StudyMismatchError, match=words):
        search(
            model,
            x,
            task=task,
            n_trials=3,
            storage=storage,
            study_name=NAME,
            sampler="random",
            progress=False,
            config=StudyConfig(space=SPACE, measure_options=FAST_MEASURE),
        )
    assert task.calls == []  # nothing was scored
    _nothing_ran(lair)


def test_the_main_command_line_export_refuses_too(lair) -> None:  # type: ignore[no-untyped-def]
    from netsculpt.cli import app as main_app

    storage = _write(lair, attrs=_settings_attrs(model_spec=f"{EVIL_MODULE}:build"))
    runner = CliRunner()
    command = ["export", "--study", NAME, "--storage", storage, "--out", str(lair / "o")]
    result = runner.invoke(main_app, command)
    assert result.exit_code == 2 and "UntrustedCodeError" in result.output, result.output
    _nothing_ran(lair)
    # the model typed on the command line is the user's own: it is used instead
    result = runner.invoke(main_app, ["export", "search_helpers:tiny_mlp", *command[1:]])
    assert result.exit_code == 0, result.output
    assert (lair / "o").is_dir()
    _nothing_ran(lair)


@pytest.mark.parametrize("key", [SETTINGS_ATTR, "netsculpt:baseline"], ids=["settings", "baseline"])
def test_resuming_a_damaged_database_is_refused(key, lair) -> None:  # type: ignore[no-untyped-def]
    storage = _raw_sql(
        lair,
        "UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
        (_deep(200_000), key),
    )
    model, x = tiny_mlp()
    with pytest.raises(SearchError, match="cannot be decoded"):
        search(
            model,
            x,
            task=WidthTask(),
            n_trials=2,
            storage=storage,
            study_name=NAME,
            sampler="random",
            progress=False,
            config=StudyConfig(space=SPACE, measure_options=FAST_MEASURE),
        )
    _nothing_ran(lair)
