"""Distilling a student whose embedding width differs from its teacher's."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from netsculpt.errors import TrainingError
from netsculpt.recovery._distill import distill_loss


class Out(dict):  # a transformers-like output: attribute and key access
    __getattr__ = dict.get


COMMON: dict[str, Any] = {
    "task_loss": None,
    "kind": "auto",
    "temperature": 1.0,
    "alpha": 1.0,
    "hidden_weight": 0.0,
    "student_hidden": {},
    "teacher_hidden": {},
}


def _loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    inputs = {"input_ids": torch.zeros(mask.shape, dtype=torch.long), "attention_mask": mask}
    return distill_loss(
        Out(last_hidden_state=student),
        Out(last_hidden_state=teacher),
        inputs=inputs,
        targets=None,
        **COMMON,
    )


def test_narrower_embeddings_match_the_relations_between_examples() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])
    teacher = torch.randn(4, 3, 8)
    teacher[..., 6:] = 0  # the channels a residual-width plan removed are zero
    student = teacher[..., :6].clone().requires_grad_(True)
    same = _loss(student, teacher, mask)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    # an orthogonal rotation of the student's space keeps every relation: still zero
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert float(_loss(student.detach() @ q, teacher, mask)) == pytest.approx(0.0, abs=1e-5)
    # padded positions do not count; a real change does, and gradients reach the student
    padded = student.detach().clone()
    padded[mask[:, :3] == 0] = 5.0
    assert float(_loss(padded, teacher, mask)) == pytest.approx(0.0, abs=1e-5)
    moved = student.detach().clone()
    moved[0, 0] += 3.0
    moved.requires_grad_(True)
    loss = _loss(moved, teacher, mask)
    assert float(loss) > 1e-3
    loss.backward()
    assert moved.grad is not None and float(moved.grad.abs().sum()) > 0


def test_embeddings_that_differ_in_more_than_their_width_are_refused() -> None:
    mask = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(TrainingError, match="shape"):
        _loss(torch.randn(2, 4, 6), torch.randn(2, 3, 8), mask)
