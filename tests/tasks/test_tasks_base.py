from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netsculpt as ns


class Minimal(ns.Task):
    name = "minimal"

    def evaluate(self, model: nn.Module) -> float:
        return 0.5

    def example_inputs(self) -> torch.Tensor:
        return torch.ones(2, 3)


class WithData(ns.Task):
    name = "with-data"

    def evaluate(self, model: nn.Module) -> float:
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
    assert task.validation_score(nn.Identity()) == 0.5
    torch.testing.assert_close(task.calib_batches(4)[0], torch.ones(2, 3))
    assert len(task.calib_batches(4)) == 1
    with pytest.raises(ns.TrainingError, match="'minimal'.*no training data"):
        task.train_batches()
    model = nn.Linear(3, 2)
    weight = model.weight.detach().clone()
    assert task.finetune(model, nn.Linear(3, 2), 10) is model
    assert torch.equal(model.weight, weight)
    with pytest.raises(ns.InputError, match="no pretrained model"):
        task.pretrained_model()
    assert repr(task) == "Minimal(name='minimal')"


def test_task_with_neither_inputs_nor_data() -> None:
    class Bare(ns.Task):
        name = "bare"

        def evaluate(self, model: nn.Module) -> float:
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


def test_default_finetune_hook_distills_or_finetunes(monkeypatch: pytest.MonkeyPatch) -> None:
    task = WithData()
    torch.manual_seed(0)
    teacher = nn.Linear(4, 2)
    ns.finetune(teacher, task, 100, lr=1e-2, progress=False)
    student = nn.Linear(4, 2)
    torch.nn.init.zeros_(student.weight)

    def agreement() -> float:
        with torch.no_grad():
            return float((student(task.x).argmax(1) == teacher(task.x).argmax(1)).float().mean())

    before = agreement()
    out = task.finetune(student, teacher, 300)
    assert out is student
    assert before < 0.6
    assert agreement() > 0.85  # the student learned the teacher's decisions

    from netsculpt.recover import train

    calls: list[str] = []
    monkeypatch.setattr(train, "distill", lambda m, t, task, b, **kw: calls.append("distill") or m)
    monkeypatch.setattr(train, "finetune", lambda m, task, b, **kw: calls.append("finetune") or m)
    task.finetune(student, teacher, 5)
    task.finetune(student, None, 5)
    assert calls == ["distill", "finetune"]
