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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._inputs import ExampleInputs, flatten_outputs
from netsculpt.errors import ExampleInputsError, InputError, TrainingError

if TYPE_CHECKING:
    from netsculpt.recover.budget import BudgetLike

__all__ = ["Task"]


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
        if n < 1:
            raise InputError(f"calib_batches needs n >= 1, got n={n}; ask for at least one batch")
        if not self.has_training_data:
            return [self.example_inputs()]
        stream = self.train_batches(batch_size=32, seed=0)
        return [inputs for inputs, _ in itertools.islice(stream, n)]

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
        if not self.has_training_data:
            return model
        from netsculpt.recover.train import distill, finetune

        if teacher is None:
            return finetune(model, self, budget, progress=False)
        return distill(model, teacher, self, budget, progress=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
