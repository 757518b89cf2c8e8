from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from recover_helpers import blobs_mlp, damage, same_state, state
from torch import nn

import netsculpt as ns
from netsculpt.recovery._distill import distill_loss
from netsculpt.tasks.digits import DigitsCNN


def kl_gap(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    """Mean KL(teacher || student) of the predicted class distributions."""
    student.eval()
    teacher.eval()
    with torch.no_grad():
        t, s = F.log_softmax(teacher(x), -1), F.log_softmax(student(x), -1)
        return float(F.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_distill_reduces_the_teacher_student_gap(digits_task, digits_cnn) -> None:
    teacher_before = state(digits_cnn)
    torch.manual_seed(0)
    student = DigitsCNN(width=8)
    x = digits_task.splits.test_x
    gap_before = kl_gap(student, digits_cnn, x)
    out = ns.distill(
        student, digits_cnn, digits_task, 120, ns.DistillConfig(lr=3e-3), progress=False
    )
    assert out is student
    gap_after = kl_gap(student, digits_cnn, x)
    assert gap_after < 0.5 * gap_before
    assert digits_task.evaluate(student) > 0.75  # from 0.1 at initialisation
    assert same_state(teacher_before, state(digits_cnn))  # the teacher is not trained
    assert not digits_cnn.training


def test_distill_repairs_a_damaged_copy_with_hidden_states(digits_task, digits_cnn) -> None:
    student = damage(copy.deepcopy(digits_cnn))
    x = digits_task.splits.test_x
    gap_before = kl_gap(student, digits_cnn, x)
    ns.distill(
        student,
        digits_cnn,
        digits_task,
        40,
        ns.DistillConfig(alpha=1.0, hidden_weight=1.0),
        progress=False,
    )
    assert kl_gap(student, digits_cnn, x) < 0.25 * gap_before


def test_distill_is_deterministic(digits_task, digits_cnn) -> None:
    torch.manual_seed(0)
    a = DigitsCNN(width=8)
    b = copy.deepcopy(a)
    ns.distill(a, digits_cnn, digits_task, 10, ns.DistillConfig(seed=5), progress=False)
    ns.distill(b, digits_cnn, digits_task, 10, ns.DistillConfig(seed=5), progress=False)
    assert same_state(state(a), state(b))


def test_teacher_shape_mismatch_names_both_shapes(digits_task, digits_cnn) -> None:
    student = DigitsCNN(width=8, num_classes=5)
    before = state(student)
    with pytest.raises(
        ns.TrainingError,
        match=r"teacher's output has shape \(64, 10\).*student's has shape \(64, 5\)",
    ):
        ns.distill(student, digits_cnn, digits_task, 5, progress=False)
    assert same_state(before, state(student))


def test_teacher_cannot_be_the_student(blobs) -> None:
    model = blobs_mlp()
    with pytest.raises(ns.TrainingError, match="deepcopy"):
        ns.distill(model, model, blobs, 5, progress=False)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("temperature", 0.0),
        ("alpha", 1.5),
        ("alpha", -0.1),
        ("hidden_weight", -1.0),
        ("output_kind", "probs"),
    ],
)
def test_bad_distill_options(blobs, option: str, value: Any) -> None:
    with pytest.raises(ns.InputError, match=option):
        ns.DistillConfig(**{option: value})


def test_distill_divergence_restores_the_student(blobs) -> None:
    student = blobs_mlp()
    before = state(student)
    with pytest.raises(ns.DivergenceError, match="distill: .* at step"):
        ns.distill(
            student,
            blobs_mlp(1),
            blobs,
            20,
            ns.DistillConfig(lr=1e10),
            optimizer=lambda p: torch.optim.SGD(p, lr=1e10),
            progress=False,
        )
    assert same_state(before, state(student))


def test_distill_loss_terms() -> None:
    logits = torch.randn(4, 10)
    ce = F.cross_entropy
    common: dict[str, Any] = {
        "task_loss": ce,
        "kind": "auto",
        "temperature": 2.0,
        "hidden_weight": 0.0,
        "student_hidden": {},
        "teacher_hidden": {},
    }
    same = distill_loss(logits, logits, inputs=logits, targets=None, alpha=0.5, **common)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    y = torch.tensor([0, 1, 2, 3])
    mixed = distill_loss(logits, logits, inputs=logits, targets=y, alpha=0.25, **common)
    assert float(mixed) == pytest.approx(0.75 * float(ce(logits, y)), rel=1e-5)
    other = torch.randn(4, 10)
    kd = distill_loss(other, logits, inputs=logits, targets=None, alpha=0.5, **common)
    expected = 4.0 * F.kl_div(
        F.log_softmax(other / 2, -1), F.softmax(logits / 2, -1), reduction="batchmean"
    )
    assert float(kd) == pytest.approx(float(expected), rel=1e-5)


def test_embedding_loss_ignores_padding() -> None:
    class Out(dict):  # a transformers-like output: attribute and key access
        __getattr__ = dict.get

    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    teacher = torch.randn(2, 3, 8)
    student = teacher.clone()
    student[mask == 0] = torch.randn(3, 8)  # differs only where padded
    common: dict[str, Any] = {
        "task_loss": None,
        "kind": "auto",
        "temperature": 1.0,
        "alpha": 1.0,
        "hidden_weight": 0.0,
        "student_hidden": {},
        "teacher_hidden": {},
    }
    inputs = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": mask}
    loss = distill_loss(
        Out(last_hidden_state=student),
        Out(last_hidden_state=teacher),
        inputs=inputs,
        targets=None,
        **common,
    )
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    student[0, 0] += 1.0
    loss = distill_loss(
        Out(last_hidden_state=student),
        Out(last_hidden_state=teacher),
        inputs=inputs,
        targets=None,
        **common,
    )
    assert float(loss) > 0.01


class TextTask(ns.Task):
    """Random token ids with a padding mask; no labels (targets None)."""

    name = "text"

    def evaluate(self, model: nn.Module, split: str = "validation") -> float:
        return 0.0

    def train_batches(self, *, batch_size: int = 64, seed: int = 0) -> Iterator[tuple[Any, None]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            ids = torch.randint(1, 100, (batch_size, 12), generator=g)
            mask = torch.ones_like(ids)
            mask[: batch_size // 2, 8:] = 0
            yield {"input_ids": ids * mask, "attention_mask": mask}, None


def test_distill_a_transformers_encoder_with_hidden_states() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = transformers.BertModel(config).eval()
    student = damage(copy.deepcopy(teacher), scale=0.5)
    task = TextTask()
    batch, _ = next(task.train_batches(batch_size=16, seed=99))

    def gap() -> float:
        with torch.no_grad():
            s = student.eval()(**batch).last_hidden_state
            t = teacher(**batch).last_hidden_state
        return float((1 - F.cosine_similarity(s, t, dim=-1))[batch["attention_mask"] == 1].mean())

    before = gap()
    ns.distill(
        student,
        teacher,
        task,
        25,
        ns.DistillConfig(batch_size=16, hidden_weight=1.0, lr=3e-3),
        progress=False,
    )
    assert gap() < 0.5 * before
