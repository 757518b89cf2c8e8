from __future__ import annotations

import doctest
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netsculpt as ns
from netsculpt.tasks import base
from netsculpt.tasks.base import SPLITS, Split, check_split, checked_score


class Minimal(ns.Task):
    name = "minimal"

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        return 0.5 if check_split(split) == "validation" else 0.25

    def example_inputs(self) -> torch.Tensor:
        return torch.ones(2, 3)


class WithData(ns.Task):
    name = "with-data"

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        with torch.no_grad():
            return float((model(self.x).argmax(1) == self.y).float().mean())

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randperm(256, generator=g)[:batch_size]
            yield self.x[rows], self.y[rows]


def test_evaluate_is_required() -> None:
    class NoEvaluate(ns.Task):
        pass

    with pytest.raises(TypeError, match="evaluate"):
        NoEvaluate()  # type: ignore[abstract]


def test_task_without_training_data() -> None:
    task = Minimal()
    assert not task.has_training_data
    assert task.evaluate(nn.Identity()) == 0.5  # validation is the default
    assert task.evaluate(nn.Identity(), "test") == 0.25
    assert task.describe_splits() == {}
    torch.testing.assert_close(task.calib_batches(4)[0], torch.ones(2, 3))
    assert len(task.calib_batches(4)) == 1
    with pytest.raises(ns.TrainingError, match="'minimal'.*no training data"):
        task.train_batches()
    assert task.recovery_config(distill=True) is None  # netsculpt's defaults
    with pytest.raises(ns.InputError, match="no pretrained model"):
        task.pretrained_model()
    assert repr(task) == "Minimal(name='minimal')"


def test_task_with_neither_inputs_nor_data() -> None:
    class Bare(ns.Task):
        name = "bare"

        def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
            return 0.0

    with pytest.raises(ns.ExampleInputsError, match="override example_inputs"):
        Bare().example_inputs()


def test_defaults_from_training_data() -> None:
    task = WithData()
    assert task.has_training_data
    assert task.example_inputs().shape == (32, 4)
    calib = task.calib_batches(3)
    assert [b.shape for b in calib] == [(32, 4)] * 3
    logits = torch.randn(5, 2)
    targets = torch.tensor([0, 1, 1, 0, 1])
    torch.testing.assert_close(task.loss(logits, targets), F.cross_entropy(logits, targets))
    torch.testing.assert_close(
        task.loss((logits, torch.zeros(1)), targets), F.cross_entropy(logits, targets)
    )
    with pytest.raises(ns.TrainingError, match="no targets"):
        task.loss(logits, None)
    with pytest.raises(ns.InputError, match="n >= 1"):
        task.calib_batches(0)


def test_a_task_names_its_recovery_recipe_as_a_config() -> None:
    """A task says how to recover with a config value; it never imports a training loop."""

    class Slow(WithData):
        def recovery_config(self, *, distill: bool) -> ns.TrainConfig:
            return ns.DistillConfig(lr=1e-4) if distill else ns.TrainConfig(lr=1e-5)

    assert WithData().recovery_config(distill=False) is None
    assert Slow().recovery_config(distill=True) == ns.DistillConfig(lr=1e-4)


def test_the_old_finetune_hook_warns_that_it_is_not_called() -> None:
    with pytest.warns(UserWarning, match=r"Legacy.finetune\(model, teacher, budget\) is not"):

        class Legacy(WithData):
            def finetune(self, model: nn.Module, teacher: nn.Module, budget: int) -> nn.Module:
                return model


def test_splits_are_validation_and_test() -> None:
    assert SPLITS == ("validation", "test")
    assert check_split("validation") == "validation" and check_split("test") == "test"


@pytest.mark.parametrize("bad", ["val", "train", "Test", "", None, 1, ["test"]])
def test_any_other_split_is_an_input_error_naming_both(bad: object) -> None:
    with pytest.raises(ns.InputError, match="not a split") as info:
        check_split(bad)
    message = str(info.value)
    assert f"split={bad!r}" in message
    assert "split='validation'" in message and "split='test'" in message
    with pytest.raises(ns.InputError, match="not a split"):
        checked_score(Minimal(), nn.Identity(), bad)  # type: ignore[arg-type]


def test_checked_score_passes_the_split_and_defaults_to_validation() -> None:
    class Spy(Minimal):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
            self.seen.append(split)
            return super().evaluate(model, split)

    task = Spy()
    assert checked_score(task, nn.Identity()) == 0.5
    assert checked_score(task, nn.Identity(), "test") == 0.25
    assert task.seen == ["validation", "test"]


def test_evaluate_without_a_split_warns_once_at_definition_and_still_scores() -> None:
    with pytest.warns(UserWarning, match=r"OneSet.evaluate\(self, model\) takes no split") as rec:

        class OneSet(ns.Task):
            name = "one-set"

            def evaluate(self, model: nn.Module) -> float:  # type: ignore[override]
                return 0.75

    assert len(rec) == 1
    assert "split='test'" in str(rec[0].message)
    assert rec[0].filename == __file__  # points at the class statement, not netsculpt
    # one held-out set: both splits read it (what the task's author wrote)
    assert checked_score(OneSet(), nn.Identity(), "validation") == 0.75
    assert checked_score(OneSet(), nn.Identity(), "test") == 0.75


def test_split_taking_subclasses_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    class Keyword(ns.Task):
        name = "keyword"

        def evaluate(self, model: nn.Module, split: Split = "validation", **kw: object) -> float:
            return 1.0

    class Star(ns.Task):
        name = "star"

        def evaluate(self, model: nn.Module, *args: object) -> float:
            return 1.0

    class Inherits(Keyword):
        pass

    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert checked_score(Star(), nn.Identity(), "test") == 1.0
    assert checked_score(Inherits(), nn.Identity(), "test") == 1.0


def test_duck_typed_task_is_scored_with_or_without_a_split() -> None:
    class Duck:
        name = "duck"

        def evaluate(self, model: nn.Module, split: str = "validation") -> float:
            return {"validation": 0.1, "test": 0.2}[split]

    class OldDuck:
        name = "old-duck"

        def evaluate(self, model: nn.Module) -> float:
            return 0.3

    class Scorer:  # a callable object, unhashable like many with __eq__
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, model: nn.Module, split: str = "validation") -> float:
            return 0.4 if split == "test" else 0.6

    attribute = type("Attribute", (), {"name": "attribute"})()
    attribute.evaluate = Scorer()

    assert checked_score(Duck(), nn.Identity(), "test") == 0.2
    assert checked_score(OldDuck(), nn.Identity(), "test") == 0.3
    assert checked_score(attribute, nn.Identity(), "test") == 0.4
    assert checked_score(attribute, nn.Identity()) == 0.6

    class Broken(Duck):
        def evaluate(self, model: nn.Module, split: str = "validation") -> Any:
            return "good"

    with pytest.raises(ns.TrainingError, match=r"\(Broken\): evaluate\(model, 'test'\) returned"):
        checked_score(Broken(), nn.Identity(), "test")


def test_module_docstring_example_runs() -> None:
    """The base class docstring's subclass (both splits, a bad split) runs as a doctest."""
    result = doctest.testmod(base, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
