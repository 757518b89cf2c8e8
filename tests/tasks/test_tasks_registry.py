from __future__ import annotations

import pytest
from torch import nn

import netsculpt as ns
from netsculpt.tasks import registry
from netsculpt.tasks.registry import available_tasks, get_task, register_task


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))


def test_builtin_names() -> None:
    assert {"digits", "minilm"} <= set(available_tasks())
    task = ns.get_task("digits", example_batch_size=8)
    assert type(task).__name__ == "DigitsTask"
    assert task.name == "digits"
    assert task.example_inputs().shape == (8, 1, 8, 8)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ns.UnknownNameError, match="unknown task 'mnist'.*digits, minilm"):
        get_task("mnist")
    assert issubclass(ns.UnknownNameError, ValueError)


def test_register_with_name_and_bare() -> None:
    @register_task("constant")
    class Constant(ns.Task):
        def __init__(self, value: float = 0.25) -> None:
            self.value = value

        def evaluate(self, model: nn.Module, split: str = "validation") -> float:
            return self.value

    @register_task
    class Named(ns.Task):
        name = "named"

        def evaluate(self, model: nn.Module, split: str = "validation") -> float:
            return 1.0

    task = get_task("constant", value=0.75)
    assert isinstance(task, Constant)
    assert task.name == "constant"
    assert task.evaluate(nn.Identity()) == 0.75
    assert isinstance(get_task("named"), Named)
    assert {"constant", "named"} <= set(available_tasks())


def test_import_string() -> None:
    task = get_task("netsculpt.tasks.digits:DigitsTask")
    assert task.name == "digits"
    with pytest.raises(ns.FactoryError, match="could not be imported"):
        get_task("no_such_package.tasks:Task")
    with pytest.raises(ns.FactoryError, match="no attribute 'Nope'"):
        get_task("netsculpt.tasks.digits:Nope")


def test_factory_must_return_a_task() -> None:
    register_task("not-a-task")(lambda: object())
    with pytest.raises(ns.FactoryError, match="not a netsculpt.Task"):
        get_task("not-a-task")
