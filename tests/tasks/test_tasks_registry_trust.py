"""Task names read from data (a study) never import code unless the caller opts in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import netsculpt as ns
from netsculpt.tasks.registry import get_task, task_from_data

MODULE = "netsculpt_task_canary_mod"


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    flag = tmp_path / "ran"
    (tmp_path / f"{MODULE}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(flag)!r}).write_text('imported')\n"
        "from netsculpt.tasks.digits import DigitsTask as Task\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return flag


def test_a_registered_name_from_data_builds_the_task() -> None:
    assert task_from_data("digits", source="study 's'").name == "digits"


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        (f"{MODULE}:Task", ns.UntrustedCodeError, "trust_code=True"),
        ("./evil.py:Task", ns.UntrustedCodeError, "not 'package.module:factory'"),
        ("os:system", ns.UntrustedCodeError, "'os:system'"),
        ("no-such-task", ns.UnknownNameError, "not registered here"),
        (42, ns.UnknownNameError, "not a task name"),
        ("x" * 600, ns.UnknownNameError, "not a task name"),
    ],
)
def test_names_from_data_that_would_run_code_are_refused(name, error, words, canary) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=words) as info:
        task_from_data(name, source="study 'shared'")
    assert "study 'shared'" in str(info.value)
    assert not canary.exists() and MODULE not in sys.modules


def test_opting_in_or_typing_the_name_imports_it(canary: Path) -> None:
    task = task_from_data(f"{MODULE}:Task", source="study 's'", trust_code=True)
    assert task.name == "digits" and canary.read_text() == "imported"
    assert get_task(f"{MODULE}:Task").name == "digits"  # typed by the caller: trusted


def test_get_task_refuses_a_name_that_is_not_a_string() -> None:
    with pytest.raises(ns.InputError, match="non-empty string"):
        get_task(None)  # type: ignore[arg-type]
    with pytest.raises(ns.InputError, match="non-empty string"):
        get_task("")
