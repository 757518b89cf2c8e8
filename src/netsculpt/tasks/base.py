"""The :class:`Task` base class: a dataset, a score and a loss in one small object.

A task tells netsculpt how good a model is (:meth:`Task.evaluate`, higher is better), what
it is called with (:meth:`Task.example_inputs`), which batches to use for data-driven
importance (:meth:`Task.calib_batches`) and, optionally, how to train it
(:meth:`Task.train_batches` and :meth:`Task.loss`).

A task holds three splits that never overlap, each with one role:

* **train**: training batches, calibration batches and example inputs;
* **validation**: what the search, early stopping, thresholds and every "pick the best"
  step score: ``task.evaluate(model)``, the default;
* **test**: only the final, reported figure: ``task.evaluate(model, "test")``.

A caller who forgets the split reads the validation split, never the test data.
Subclassing takes a few lines:

>>> import torch
>>> import netsculpt as ns
>>> from netsculpt.tasks.base import check_split
>>> class Parity(ns.Task):
...     name = "parity"  # is the sum of four numbers positive?
...
...     def __init__(self):
...         g = torch.Generator().manual_seed(0)
...         x = torch.randn(128, 4, generator=g)
...         y = (x.sum(1) > 0).long()
...         self.data = {"validation": (x[:64], y[:64]), "test": (x[64:], y[64:])}
...
...     def evaluate(self, model, split="validation"):
...         x, y = self.data[check_split(split)]
...         with torch.no_grad():
...             return float((model(x).argmax(1) == y).float().mean())
...
...     def example_inputs(self):
...         return torch.randn(8, 4)
...
...     def describe_splits(self):
...         return {"validation": 64, "test": 64}
>>> task = Parity()
>>> model = torch.nn.Linear(4, 2)
>>> with torch.no_grad():
...     _ = model.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
...     _ = model.bias.zero_()
>>> task.evaluate(model), task.evaluate(model, "test")  # validation (the default), test
(1.0, 1.0)
>>> task.evaluate(model, "val")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
netsculpt.errors.InputError: split='val' is not a split of a task; pass split='validation' ...
"""

from __future__ import annotations

import abc
import functools
import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from netsculpt._checks import check_finite_inputs, check_int
from netsculpt._inputs import ExampleInputs, flatten_outputs
from netsculpt.errors import ExampleInputsError, InputError, TrainingError

if TYPE_CHECKING:
    from netsculpt.recovery.config import TrainConfig

__all__ = [
    "SPLITS",
    "Split",
    "Task",
    "check_calib_batches",
    "check_split",
    "check_task",
    "checked_score",
]

#: The held-out splits :meth:`Task.evaluate` scores: ``"validation"`` for every choice
#: (search, early stopping, thresholds, picking the best), ``"test"`` for reported figures.
Split = Literal["validation", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)

#: What ``ns.finetune`` and ``ns.distill`` call on a task (a duck-typed task needs them all).
TRAINING_METHODS: tuple[str, ...] = ("evaluate", "train_batches", "loss")


class Task(abc.ABC):
    """A dataset with a score: what netsculpt evaluates, calibrates and recovers models on.

    A task has three splits that never overlap: **train** (training batches, calibration
    batches, example inputs), **validation** (``evaluate(model)``: what the search, early
    stopping and every selection step score) and **test** (``evaluate(model, "test")``:
    only the final, reported figure).

    Only :meth:`evaluate` is required; it takes the split and scores each on its own data
    (:func:`check_split` rejects any other value). Override :meth:`example_inputs` when the
    task has no training data, :meth:`train_batches` (plus :meth:`loss` when cross-entropy
    on the first output does not fit) to let ``ns.finetune`` and ``ns.distill`` train on it,
    :meth:`recovery_config` to choose the options a search recovers with, and
    :meth:`describe_splits` to give the split sizes to reports.
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
        evaluate = cls.__dict__.get("evaluate")
        if inspect.isfunction(evaluate) and not _accepts(evaluate, 3):  # (self, model, split)
            warnings.warn(
                _one_split_message(cls.__name__, getattr(cls, "name", "task")),
                UserWarning,
                stacklevel=3,
            )
        if inspect.isfunction(cls.__dict__.get("finetune")):
            warnings.warn(
                f"{cls.__name__}.finetune(model, teacher, budget) is not called by netsculpt "
                f"any more (ns.search recovers with netsculpt.recovery.recover); override "
                f"recovery_config(self, *, distill) to return the ns.DistillConfig / "
                f"ns.TrainConfig this task should recover with",
                UserWarning,
                stacklevel=3,
            )

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: Split = "validation") -> float:
        """Score ``model`` on one held-out split; higher is better.

        ``split="validation"`` (the default) is what the search, early stopping, thresholds
        and any "pick the best" step read; ``split="test"`` is only for the final, reported
        figure. The two never share data with each other or with the training split. Any
        other value raises :class:`~netsculpt.errors.InputError` (see :func:`check_split`).
        """

    def describe_splits(self) -> dict[str, int]:
        """The size of each split, e.g. ``{"train": 1077, "validation": 360, "test": 360}``.

        For reports: how many examples (or queries) each figure rests on. Tasks that know
        their sizes override it; the default, ``{}``, says nothing.
        """
        return {}

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
        inputs alone when the task has no training data; never the validation or test split.
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

    def recovery_config(self, *, distill: bool) -> TrainConfig | None:
        """The training options this task recommends to recover a pruned model.

        ``distill`` says whether a teacher (the dense model) is there: return a
        :class:`~netsculpt.DistillConfig` then, a :class:`~netsculpt.TrainConfig`
        otherwise. ``ns.search`` (when its config sets no ``recover``) and
        :func:`netsculpt.recovery.recover` use it. The default, ``None``, takes
        netsculpt's defaults (``DistillConfig()`` / ``TrainConfig()``). A task without
        training data is never trained, whatever this returns.
        """
        return None

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


def check_split(split: Any) -> Split:
    """``split`` is ``"validation"`` or ``"test"``; return it.

    Raises:
        InputError: any other value; the message names it and the two allowed ones.
    """
    if not (isinstance(split, str) and split in SPLITS):
        raise InputError(
            f"split={_short(split)} is not a split of a task; pass split='validation' (what "
            f"the search, early stopping and every selection score) or split='test' (only the "
            f"final, reported figure)"
        )
    return split  # type: ignore[return-value]  # one of SPLITS, checked above


def checked_score(task: Any, model: nn.Module, split: Split = "validation") -> float:
    """``task.evaluate(model, split)`` as a float; a score that is not a finite number is an
    error.

    Accepts Python and NumPy numbers and one-element tensors. A task whose ``evaluate``
    takes no split (written before tasks had splits) is called as ``evaluate(model)``
    for either split: it has one held-out set, and :class:`Task` warns about it when such
    a subclass is defined.

    Raises:
        InputError: ``split`` is not ``"validation"`` or ``"test"``.
        TrainingError: the score is not a number (``None``, a string, a dict, a bool, a tensor
            of several values) or is NaN or infinite; the message names the task.
    """
    split = check_split(split)
    evaluate = task.evaluate
    score = evaluate(model, split) if _takes_split(evaluate) else evaluate(model)
    method = f"evaluate(model, {split!r})"
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
            f"{_label(task)}: {method} returned {_short(score)} ({type(score).__name__}), not a "
            f"number; return a float score (higher is better), e.g. the accuracy"
        )
    if not math.isfinite(value):
        raise TrainingError(
            f"{_label(task)}: {method} returned {value}, not a finite score; check the "
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


def _takes_split(evaluate: Callable[..., Any]) -> bool:
    """Whether ``evaluate(model, split)`` can be called (``evaluate`` as got from a task)."""
    func = getattr(evaluate, "__func__", None)
    if inspect.isfunction(func) and getattr(evaluate, "__self__", None) is not None:
        return _accepts(func, 3)  # a bound method: (self, model, split)
    return _bindable(evaluate, 2)  # any other callable, e.g. a function set on an instance


@functools.lru_cache(maxsize=256)
def _accepts(func: Callable[..., Any], n_args: int) -> bool:
    """:func:`_bindable`, cached per function (the tasks' classes hold few)."""
    return _bindable(func, n_args)


def _bindable(func: Callable[..., Any], n_args: int) -> bool:
    """Whether ``func`` can be called with ``n_args`` positional arguments."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: assume it can
        return True
    try:
        signature.bind(*[None] * n_args)
    except TypeError:
        return False
    return True


def _one_split_message(cls_name: str, name: Any) -> str:
    return (
        f"{cls_name}.evaluate(self, model) takes no split, so task {name!r} scores one "
        f"held-out set for both the choices (search, early stopping) and the reported "
        f"figures; define evaluate(self, model, split='validation') scoring a validation "
        f"split, and split='test' on data that no choice reads"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
