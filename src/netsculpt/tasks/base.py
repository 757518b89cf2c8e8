"""The :class:`Task` base class: a dataset, a score and a loss in one small object.

A task tells netsculpt how good a model is (:meth:`Task.evaluate`, higher is better), what
it is called with (:meth:`Task.example_inputs`), which batches to use for data-driven
importance (:meth:`Task.calib_batches`) and, optionally, how to train it
(:meth:`Task.train_batches` and :meth:`Task.loss`). Subclassing takes a few lines::

    import netsculpt as ns

    class MyTask(ns.Task):
        name = "my-task"

        def evaluate(self, model):
            return accuracy(model, my_val_loader)

        def example_inputs(self):
            return torch.randn(32, 3, 224, 224)
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_finite_inputs, check_int, check_model
from netsculpt._inputs import ExampleInputs, flatten_outputs
from netsculpt.errors import ExampleInputsError, InputError, TrainingError

if TYPE_CHECKING:
    from netsculpt.recover.budget import BudgetLike

__all__ = ["Task", "check_calib_batches", "check_task", "checked_score"]

#: What ``ns.finetune`` and ``ns.distill`` call on a task (a duck-typed task needs them all).
TRAINING_METHODS: tuple[str, ...] = ("evaluate", "train_batches", "loss")


class Task(abc.ABC):
    """A dataset with a score: what netsculpt evaluates, calibrates and recovers models on.

    Only :meth:`evaluate` is required. Override :meth:`example_inputs` when the task has no
    training data, and :meth:`train_batches` (plus :meth:`loss` when cross-entropy on the
    first output does not fit) to let ``ns.finetune`` and ``ns.distill`` train on it.
    Override :meth:`validation_score` when the task has a validation split, so that early
    stopping never looks at the data :meth:`evaluate` reports on.
    """

    #: Short name of the task, used in logs, reports and :func:`netsculpt.get_task`.
    name: str = "task"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", "task")
        if not isinstance(name, str) or not name:
            raise InputError(
                f"{cls.__name__}.name must be a non-empty string, got {name!r} "
                f"({type(name).__name__}); e.g. name = 'my-task'"
            )

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> float:
        """Score ``model`` on the task's held-out data; higher is better."""

    def validation_score(self, model: nn.Module) -> float:
        """Score used for early stopping; by default the same as :meth:`evaluate`.

        Tasks with a separate validation split override this so that training decisions
        never see the data the final score is computed on.
        """
        return self.evaluate(model)

    @property
    def has_training_data(self) -> bool:
        """Whether the task overrides :meth:`train_batches`, so it can be trained on."""
        return type(self).train_batches is not Task.train_batches

    def example_inputs(self) -> ExampleInputs:
        """Example inputs for analysis and latency: a tensor, a tuple or a dict of keywords.

        The default takes the inputs of the first training batch (batch size 32); tasks
        without training data must override it.
        """
        if not self.has_training_data:
            raise ExampleInputsError(
                f"task {self.name!r} ({type(self).__name__}) has neither example inputs nor "
                f"training data; override example_inputs() to return the batch the model is "
                f"called with, e.g. torch.randn(32, 3, 224, 224)"
            )
        inputs, _ = next(iter(self.train_batches(batch_size=32, seed=0)))
        return inputs

    def calib_batches(self, n: int = 4) -> list[ExampleInputs]:
        """``n`` batches of example inputs for data-driven importance (taylor, activation).

        The default takes the inputs of the first ``n`` training batches, or the example
        inputs alone when the task has no training data.
        """
        try:
            check_int(n, "n")
        except InputError as exc:
            raise InputError(f"calib_batches: {exc}") from None
        if n < 1:
            raise InputError(f"calib_batches needs n >= 1, got n={n}; ask for at least one batch")
        if not self.has_training_data:
            return check_calib_batches([self.example_inputs()], what=f"task {self.name!r}")
        stream = self.train_batches(batch_size=32, seed=0)
        batches = []
        for batch in itertools.islice(stream, n):
            if not (isinstance(batch, tuple) and len(batch) == 2):
                raise TrainingError(
                    f"task {self.name!r} ({type(self).__name__}): train_batches() must yield "
                    f"(inputs, targets) pairs, got {type(batch).__name__}; yield x, y (y may "
                    f"be None)"
                )
            batches.append(batch[0])
        return check_calib_batches(batches, what=f"task {self.name!r}")

    def train_batches(
        self, *, batch_size: int = 64, seed: int = 0
    ) -> Iterator[tuple[ExampleInputs, Any]]:
        """An endless, shuffled stream of ``(inputs, targets)`` batches for training.

        The order depends only on ``seed``. ``targets`` may be ``None`` for tasks whose loss
        needs no labels (distillation takes its targets from the teacher). The default
        raises :class:`~netsculpt.errors.TrainingError`: the task has no training data.
        """
        raise TrainingError(
            f"task {self.name!r} ({type(self).__name__}) has no training data, so it cannot "
            f"be fine-tuned or distilled on; override train_batches() to yield "
            f"(inputs, targets) batches, or skip the recovery step"
        )

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Training loss; the default is cross-entropy of the first output tensor."""
        found = flatten_outputs(outputs)
        if not found:
            raise TrainingError(
                f"task {self.name!r}: the model returned no tensor "
                f"({type(outputs).__name__}); the default loss needs logits as the first "
                f"output, or override Task.loss(outputs, targets)"
            )
        if targets is None:
            raise TrainingError(
                f"task {self.name!r} yields no targets, so the default cross-entropy loss "
                f"cannot be computed; use ns.distill with a teacher or override Task.loss"
            )
        return F.cross_entropy(found[0], targets)

    def pretrained_model(self) -> nn.Module:
        """The task's own trained model, for demos; tasks without one raise InputError."""
        raise InputError(
            f"task {self.name!r} ({type(self).__name__}) ships no pretrained model; "
            f"pass your own model"
        )

    def finetune(
        self, model: nn.Module, teacher: nn.Module | None, budget: BudgetLike
    ) -> nn.Module:
        """Recovery hook after pruning: train ``model`` in place and return it.

        By default, when the task has training data, the pruned ``model`` is distilled from
        ``teacher`` with :func:`netsculpt.distill` (or fine-tuned with
        :func:`netsculpt.finetune` when ``teacher`` is ``None``); without training data the
        model is returned unchanged. Override it to plug in your own recipe.
        """
        from netsculpt.recover.budget import Budget

        try:
            check_model(model)
            if teacher is not None:
                check_model(teacher, what="teacher")
            Budget.parse(budget)  # a bad budget is an error even when there is nothing to train
        except InputError as exc:
            raise type(exc)(f"{type(self).__name__}.finetune: {exc}") from None
        if not self.has_training_data:
            return model
        from netsculpt.recover.train import distill, finetune

        if teacher is None:
            return finetune(model, self, budget, progress=False)
        return distill(model, teacher, self, budget, progress=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _label(task: Any) -> str:
    return f"task {getattr(task, 'name', type(task).__name__)!r} ({type(task).__name__})"


def check_task(task: Any, *, caller: str, what: str = "task") -> Task:
    """``task`` is a :class:`Task` instance (or an object with ``evaluate``, ``train_batches``
    and ``loss``, the methods the training loops call); return it.

    A task name is not a task: the message says to build it with ``ns.get_task(name)``.

    Raises:
        InputError: ``task`` is ``None``, a string, a class, or an object without the methods.
    """
    if isinstance(task, Task):
        return task
    if task is None:
        raise InputError(
            f"{caller}: {what}=None, but {caller} needs a task to train on; pass a "
            f"netsculpt.Task, e.g. {what}=ns.get_task('digits') or an instance of your own "
            f"Task subclass"
        )
    if isinstance(task, str):
        raise InputError(
            f"{caller}: {what}={task!r} is a task name, not a task; build it first with "
            f"{what}=ns.get_task({task!r})"
        )
    if isinstance(task, type):
        hint = f"{task.__name__}()" if issubclass(task, Task) else "an instance of a Task subclass"
        raise InputError(
            f"{caller}: {what}={task.__name__} is a class, not a task; pass an instance: "
            f"{what}={hint}"
        )
    missing = [m for m in TRAINING_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise InputError(
            f"{caller}: {what} must be a netsculpt.Task, got {type(task).__name__} "
            f"({_short(task)}), which lacks {', '.join(missing)}; subclass netsculpt.Task "
            f"(or use ns.get_task(name))"
        )
    return task  # type: ignore[no-any-return]  # duck-typed: has every method the loops call


def checked_score(task: Any, model: nn.Module, *, method: str = "evaluate") -> float:
    """``task.<method>(model)`` as a float; a score that is not a finite number is an error.

    Accepts Python and NumPy numbers and one-element tensors.

    Raises:
        TrainingError: the score is not a number (``None``, a string, a dict, a bool, a tensor
            of several values) or is NaN or infinite; the message names the task.
    """
    score = getattr(task, method)(model)
    value: float | None = None
    if isinstance(score, torch.Tensor):
        if score.numel() == 1 and score.dtype != torch.bool:
            value = float(score.detach().reshape(()))
    elif not isinstance(score, bool):
        try:
            value = float(score) if hasattr(score, "__float__") else None
        except (TypeError, ValueError):
            value = None
    if value is None:
        raise TrainingError(
            f"{_label(task)}: {method}() returned {_short(score)} ({type(score).__name__}), not a "
            f"number; return a float score (higher is better), e.g. the accuracy"
        )
    if not math.isfinite(value):
        raise TrainingError(
            f"{_label(task)}: {method}() returned {value}, not a finite score; check the "
            f"model's outputs and the metric for NaN/inf (an empty split divides by zero)"
        )
    return value


def check_calib_batches(batches: Any, *, what: str = "calib") -> list[ExampleInputs]:
    """``batches`` is a non-empty list of example inputs; return it as a list.

    Each batch is what the model is called with: a tensor, a tuple of positional inputs or a
    dict of keyword inputs, holding finite real tensors.

    Raises:
        ExampleInputsError: a single tensor or dict instead of a list of them, an empty list,
            a batch of another type, or a batch with NaN, infinite or meta tensors.
    """
    if isinstance(batches, (torch.Tensor, Mapping)):
        raise ExampleInputsError(
            f"{what}: calibration batches must be a list of batches, got one "
            f"{type(batches).__name__}; wrap it in a list: [batch]"
        )
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise ExampleInputsError(
            f"{what}: calibration batches must be a list of example inputs (tensors, tuples "
            f"or dicts), got {type(batches).__name__} ({_short(batches)})"
        )
    out = list(batches)
    if not out:
        raise ExampleInputsError(
            f"{what}: got no calibration batches; pass at least one batch of example inputs"
        )
    for i, batch in enumerate(out):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise ExampleInputsError(
                f"{what}: calibration batch {i} is {type(batch).__name__} ({_short(batch)}), "
                f"not example inputs; each batch is a tensor, a tuple of tensors or a dict of "
                f"keyword inputs"
            )
        check_finite_inputs(batch, what=f"{what}: calibration batch {i}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
