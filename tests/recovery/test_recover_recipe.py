"""``recover``: the recovery step of a search picks its loop from one config value."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from recover_helpers import BlobsTask, blobs_mlp, same_state, state
from torch import nn

import netsculpt as ns
from netsculpt.recovery import recipe, recover
from netsculpt.recovery.recipe import StepCounter, recovery_config_of
from netsculpt.tasks.base import Split


class NoData(ns.Task):
    name = "no-data"

    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        return 0.5

    def example_inputs(self) -> torch.Tensor:
        return torch.ones(2, 2)


class Careful(BlobsTask):
    """A task that recommends its own recovery options."""

    def recovery_config(self, *, distill: bool) -> ns.TrainConfig:
        if distill:
            return ns.DistillConfig(lr=3e-3, alpha=1.0, batch_size=16)
        return ns.TrainConfig(lr=3e-3, batch_size=16)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """Replace the two loops in ``recipe`` by recorders of (loop, teacher, config)."""
    calls: list[tuple[str, Any, Any]] = []

    def distill(m: nn.Module, t: nn.Module, task: Any, b: Any, c: Any, **kw: Any) -> nn.Module:
        calls.append(("distill", t, c))
        return m

    def finetune(m: nn.Module, task: Any, b: Any, c: Any, **kw: Any) -> nn.Module:
        calls.append(("finetune", None, c))
        return m

    monkeypatch.setattr(recipe, "distill", distill)
    monkeypatch.setattr(recipe, "finetune", finetune)
    return calls


def test_the_config_picks_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    teacher, task = blobs_mlp(1), BlobsTask()
    recover(blobs_mlp(), task, 5, teacher=teacher)
    recover(blobs_mlp(), task, 5)
    recover(blobs_mlp(), task, 5, teacher=teacher, config=ns.TrainConfig(lr=0.1))
    recover(blobs_mlp(), task, 5, teacher=teacher, config=ns.DistillConfig(alpha=0.9))
    assert calls == [
        ("distill", teacher, ns.DistillConfig()),  # the defaults: distil from the teacher
        ("finetune", None, ns.TrainConfig()),  # no teacher: fine-tune
        ("finetune", None, ns.TrainConfig(lr=0.1)),  # a plain TrainConfig fine-tunes
        ("distill", teacher, ns.DistillConfig(alpha=0.9)),
    ]


def test_without_a_config_the_task_recipe_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    teacher, task = blobs_mlp(1), Careful()
    recover(blobs_mlp(), task, 5, teacher=teacher)
    recover(blobs_mlp(), task, 5)
    recover(blobs_mlp(), task, 5, teacher=teacher, config=ns.DistillConfig())  # config wins
    assert [c for _, _, c in calls] == [
        ns.DistillConfig(lr=3e-3, alpha=1.0, batch_size=16),
        ns.TrainConfig(lr=3e-3, batch_size=16),
        ns.DistillConfig(),
    ]


def test_recover_distils_the_teacher_decisions() -> None:
    task = BlobsTask()
    teacher = blobs_mlp(1)
    ns.finetune(teacher, task, 200, ns.TrainConfig(lr=1e-2), progress=False)
    teacher.eval()
    student = blobs_mlp(2)

    def agreement() -> float:
        with torch.no_grad():
            student.eval()
            return float((student(task.x).argmax(1) == teacher(task.x).argmax(1)).float().mean())

    before = agreement()
    counter = StepCounter()
    out = recover(
        student, task, 150, teacher=teacher, config=ns.DistillConfig(lr=1e-2), callbacks=[counter]
    )
    assert out is student
    assert counter.steps == 150
    assert before < 0.7 and agreement() > 0.9


def test_a_task_without_training_data_is_left_untrained() -> None:
    model = nn.Linear(2, 2)
    before = state(model)
    counter = StepCounter()
    assert recover(model, NoData(), 30, teacher=nn.Linear(2, 2), callbacks=[counter]) is model
    assert counter.steps == 0 and same_state(before, state(model))


def test_a_bad_task_recipe_is_named() -> None:
    class Junk(BlobsTask):
        def recovery_config(self, *, distill: bool) -> Any:
            return {"lr": 1e-3}

    class DistillAlone(BlobsTask):
        def recovery_config(self, *, distill: bool) -> Any:
            return ns.DistillConfig()

    with pytest.raises(ns.InputError, match=r"'blobs': recovery_config\(distill=True\) returned"):
        recover(blobs_mlp(), Junk(), 5, teacher=blobs_mlp(1))
    with pytest.raises(ns.InputError, match="there is no teacher"):
        recovery_config_of(DistillAlone(), distill=False)
