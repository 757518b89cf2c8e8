"""Recover accuracy after pruning: ``ns.finetune`` (task loss) and ``ns.distill`` (teacher).

Both train the model they are given **in place** and return that same object, so
``small = ns.finetune(small, task, "2m")`` and ``ns.finetune(small, task, "2m")`` do the
same thing. Training is deterministic for a given ``config.seed`` (the data order comes from
``task.train_batches(seed=seed)`` and the random state, e.g. for dropout, from
``torch.manual_seed(seed)`` inside a forked RNG, so the caller's random state is left as
it was). When the loss becomes NaN or infinite (or explodes) the model's weights are
restored to what they were before training and :class:`~netsculpt.errors.DivergenceError`
is raised; any other error during training (a ``KeyboardInterrupt`` included) restores them
too. Every argument is checked before the first step: a bad call raises an
:class:`~netsculpt.errors.InputError` that names the value and the fix, and trains nothing.

The options that can be written down travel in one config value,
:class:`~netsculpt.TrainConfig` or :class:`~netsculpt.DistillConfig` (``None``: the
defaults); the call itself takes only what cannot (callbacks, an optimiser factory):

>>> small = ns.finetune(small, task, "30s", ns.TrainConfig(lr=1e-3))          # doctest: +SKIP
>>> small = ns.distill(small, teacher, task, 500, ns.DistillConfig(alpha=0.9))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from netsculpt._inputs import ExampleInputs, inputs_to, split_inputs
from netsculpt.errors import DivergenceError, TrainingError
from netsculpt.recovery._distill import distill_loss, hidden_states_of, wants_hidden_kwarg
from netsculpt.recovery._validate import (
    C,
    check_callbacks,
    check_hidden_layers,
    check_models,
    check_optimizer,
    check_train_call,
    made_optimizer,
)
from netsculpt.recovery.budget import Budget, BudgetLike
from netsculpt.recovery.callbacks import call_hooks
from netsculpt.recovery.config import DistillConfig, TrainConfig
from netsculpt.tasks.base import Task, checked_score

__all__ = ["distill", "finetune"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
# (step, inputs, targets) -> loss; called in training mode with gradients enabled
StepLoss = Callable[[int, ExampleInputs, Any], torch.Tensor]
# a loss this many times the first step's (or above it, when the first is below 1) diverged
_EXPLODE = 1e6


def finetune(
    model: nn.Module,
    task: Task,
    budget: BudgetLike,
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    optimizer: OptimizerFactory | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``task.train_batches`` with ``task.loss``; return it.

    Args:
        model: the model to train (changed in place).
        task: supplies ``train_batches``, ``loss`` and, for early stopping, the validation
            score ``task.evaluate(model, "validation")`` (never the test split).
        budget: steps (``200``), time (``"30s"``, ``"2m"``) or a :class:`Budget`.
        config: a :class:`~netsculpt.TrainConfig` (learning rate, weight decay, batch size,
            seed, early stopping); ``None`` for ``TrainConfig()``.
        progress: show a rich progress bar (only when stderr is a terminal).
        callbacks: objects with any of the hooks of :class:`~netsculpt.recovery.Callback`.
        optimizer: ``params -> torch.optim.Optimizer`` replacing AdamW (then
            ``config.lr`` and ``config.weight_decay`` are not used).

    Raises:
        DivergenceError: the loss became NaN or infinite, or exploded to more than a
            million times the first step's loss (more than 1e6 when that was below 1);
            the weights were restored.
        TrainingError: the task has no training data, the model no trainable weights, the
            optimizer factory returned something else than an optimiser, or the task's
            validation score is not a finite number.
        InputError: checked before any step: a model that is not an ``nn.Module`` or has
            meta, NaN or infinite weights; a task that is not a :class:`~netsculpt.Task`
            (a name: build it with ``ns.get_task``); a bad budget, callback or optimizer; a
            config that is not a ``TrainConfig`` (a ``DistillConfig`` belongs to
            ``ns.distill``). A bad option value is refused when the config is built.
    """
    config, limit, callbacks = _check_call(
        "finetune",
        {"model": model},
        task=task,
        budget=budget,
        config=config,
        kind=TrainConfig,
        progress=progress,
        callbacks=callbacks,
        optimizer=optimizer,
    )
    task_loss = task.loss

    def step_loss(step: int, inputs: ExampleInputs, targets: Any) -> torch.Tensor:
        return task_loss(_call(model, inputs), targets)

    return _train(
        model,
        task,
        limit,
        step_loss,
        config,
        progress=progress,
        callbacks=callbacks,
        optimizer=optimizer,
        label="finetune",
    )


def distill(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    budget: BudgetLike,
    config: DistillConfig | None = None,
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    optimizer: OptimizerFactory | None = None,
) -> nn.Module:
    """Train ``student`` in place to match ``teacher`` on ``task``'s batches; return it.

    The loss is ``alpha * match + (1 - alpha) * task.loss`` (just ``match`` when the task
    yields no targets), plus ``hidden_weight * hidden`` when ``hidden_weight > 0`` (the
    weights and options are fields of ``config``, a :class:`~netsculpt.DistillConfig`;
    ``None`` for ``DistillConfig()``):

    * ``match`` for logits: KL divergence of the temperature-softened distributions, times
      ``temperature**2``; for embeddings (transformers outputs with ``last_hidden_state``
      and no ``logits``): ``1 - cosine`` plus mean squared error per token, over the
      attention mask when the inputs carry one. ``output_kind`` overrides the guess.
      Embeddings of different widths (a student whose residual width was pruned with
      ``PruneConfig(residual=True, protect_outputs=False)``) match how the examples of a
      batch relate instead: the squared difference of the cosine similarities of every
      pair of (mask-)pooled embeddings, summed over one example's pairs.
    * ``hidden``: mean squared error between hidden states whose shapes match. For
      transformers models these are ``output_hidden_states`` (student layer ``i`` is
      paired with the teacher layer at the same relative depth); for other models, the
      outputs of top-level child modules with the same name. ``hidden_layers`` names the
      modules to match instead (qualified names present in both models, e.g.
      ``("features.3", "classifier.0")``); their outputs must then have equal shapes.

    The teacher runs in eval mode without gradients and is not changed. ``progress``,
    ``callbacks`` and ``optimizer`` are those of :func:`finetune`.

    Raises:
        TrainingError: the teacher's output shape differs from the student's (both are
            named; for embeddings, in more than the last dimension), a layer of
            ``hidden_layers`` gives outputs of different shapes, or the teacher is the
            student.
        DivergenceError: the loss became NaN or infinite; the weights were restored.
        InputError: checked before any step: as for :func:`finetune`, plus a teacher that
            is not a module, a config that is not a ``DistillConfig``, or ``hidden_layers``
            names that a model lacks (close names are listed).
    """
    config, limit, callbacks = _check_call(
        "distill",
        {"student": student, "teacher": teacher},
        task=task,
        budget=budget,
        config=config,
        kind=DistillConfig,
        progress=progress,
        callbacks=callbacks,
        optimizer=optimizer,
    )
    if teacher is student:
        raise TrainingError(
            "distill got the same module as student and teacher; pass a frozen copy as the "
            "teacher, e.g. teacher=copy.deepcopy(model) taken before pruning"
        )
    hidden_weight = config.hidden_weight
    layers = check_hidden_layers(student, teacher, config.hidden_layers)
    teacher_device = _device_of(teacher)
    student_device = _device_of(student)
    task_loss = task.loss
    hf_kwargs = (
        hidden_weight > 0
        and layers is None
        and wants_hidden_kwarg(student)
        and wants_hidden_kwarg(teacher)
    )
    extra = {"output_hidden_states": True} if hf_kwargs else {}
    hook = hidden_weight > 0 and not hf_kwargs

    def step_loss(step: int, inputs: ExampleInputs, targets: Any) -> torch.Tensor:
        with torch.no_grad():
            with hidden_states_of(teacher, hook, layers) as t_tap:
                t_out = _call(teacher, inputs_to(inputs, teacher_device), extra)
            t_out = _to_device(t_out, student_device)
            t_hidden = _to_device(t_tap.collect(t_out), student_device)
        with hidden_states_of(student, hook, layers) as s_tap:
            s_out = _call(student, inputs, extra)
        s_hidden = s_tap.collect(s_out)
        return distill_loss(
            s_out,
            t_out,
            inputs=inputs,
            targets=targets,
            task_loss=task_loss,
            kind=config.output_kind,
            temperature=config.temperature,
            alpha=config.alpha,
            hidden_weight=hidden_weight,
            student_hidden=s_hidden,
            teacher_hidden=t_hidden,
            hidden_layers=layers,
        )

    was_training = teacher.training
    teacher.eval()
    try:
        return _train(
            student,
            task,
            limit,
            step_loss,
            config,
            progress=progress,
            callbacks=callbacks,
            optimizer=optimizer,
            label="distill",
        )
    finally:
        teacher.train(was_training)


# -- the shared loop -----------------------------------------------------------------------


def _check_call(
    label: str,
    models: dict[str, Any],
    *,
    task: Any,
    budget: Any,
    config: Any,
    kind: type[C],
    progress: Any,
    callbacks: Any,
    optimizer: Any,
) -> tuple[C, Budget, tuple[Any, ...]]:
    """Every check of a finetune / distill call, before anything is trained or copied."""
    check_models(label, **models)
    _, limit, config = check_train_call(
        label, task=task, budget=budget, config=config, kind=kind, progress=progress
    )
    checked = check_callbacks(label, callbacks)
    check_optimizer(label, optimizer)
    return config, limit, checked


def _train(
    model: nn.Module,
    task: Task,
    limit: Budget,
    step_loss: StepLoss,
    config: TrainConfig,
    *,
    progress: bool,
    callbacks: Sequence[Any],
    optimizer: OptimizerFactory | None,
    label: str,
) -> nn.Module:
    lr, seed, patience = config.lr, config.seed, config.early_stop_patience
    eval_every = config.eval_every
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(
            f"{label}: {type(model).__name__} has no trainable parameters (all have "
            f"requires_grad=False); unfreeze the ones to train"
        )
    if eval_every is None and patience is not None:
        eval_every = max(1, limit.steps // 10) if limit.steps is not None else 50
    callbacks = tuple(callbacks)
    device = _device_of(model)
    batches = task.train_batches(batch_size=config.batch_size, seed=seed)
    before = _Snapshot(model)
    was_training = model.training
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda), _ProgressBar(progress, label, limit) as bar:
            torch.manual_seed(seed)
            opt = (
                made_optimizer(label, optimizer(params))
                if optimizer is not None
                else torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
            )
            stopper = _EarlyStopper(model, patience)
            if patience is not None:
                stopper.update(_validation_score(task, model))
            call_hooks(callbacks, "on_train_start", model, limit.steps)
            start = time.perf_counter()
            step = 0
            explode_at = math.inf
            while not _spent(limit, step, time.perf_counter() - start):
                inputs, targets = _next_batch(batches, task)
                inputs, targets = inputs_to(inputs, device), _targets_to(targets, device)
                model.train()
                call_hooks(callbacks, "on_step_start", step, model)
                opt.zero_grad(set_to_none=True)
                loss = step_loss(step, inputs, targets)
                value = float(loss.detach())
                if step == 0:
                    explode_at = _EXPLODE * max(abs(value), 1.0)
                if not math.isfinite(value) or value > explode_at:
                    raise _diverged(label, step, value, lr if optimizer is None else None)
                loss.backward()
                call_hooks(callbacks, "after_backward", step, model)
                opt.step()
                call_hooks(callbacks, "on_step_end", step, model)
                step += 1
                bar.advance(step, time.perf_counter() - start, value)
                if eval_every is not None and step % eval_every == 0:
                    score = _validation_score(task, model)
                    call_hooks(callbacks, "on_evaluate", step, model, score)
                    if stopper.update(score):
                        break
            _check_finite_weights(model, label, step)
            if patience is not None:
                if eval_every is None or step % eval_every:
                    score = _validation_score(task, model)
                    call_hooks(callbacks, "on_evaluate", step, model, score)
                    stopper.update(score)
                stopper.restore_best()
    except BaseException:
        before.restore()
        model.train(was_training)
        raise
    model.train(was_training)
    call_hooks(callbacks, "on_train_end", model)
    return model


def _spent(limit: Budget, step: int, elapsed: float) -> bool:
    if limit.steps is not None and step >= limit.steps:
        return True
    return limit.seconds is not None and elapsed >= limit.seconds


def _next_batch(batches: Iterator[Any], task: Task) -> tuple[Any, Any]:
    try:
        batch = next(batches)
    except StopIteration:
        raise TrainingError(
            f"task {getattr(task, 'name', type(task).__name__)!r}: train_batches() ran out of "
            f"batches; it must yield (inputs, targets) forever (loop over epochs)"
        ) from None
    if not (isinstance(batch, tuple) and len(batch) == 2):
        raise TrainingError(
            f"task {getattr(task, 'name', type(task).__name__)!r}: train_batches() must yield "
            f"(inputs, targets) pairs, got {type(batch).__name__}"
        )
    return batch


def _targets_to(targets: Any, device: torch.device) -> Any:
    if targets is None:
        return None
    return inputs_to(targets, device)


def _call(model: nn.Module, inputs: ExampleInputs, extra: dict[str, Any] | None = None) -> Any:
    args, kwargs = split_inputs(inputs)
    return model(*args, **kwargs, **(extra or {}))


def _to_device(value: Any, device: torch.device) -> Any:
    return torch.utils._pytree.tree_map(
        lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, value
    )


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for an empty model."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _validation_score(task: Task, model: nn.Module) -> float:
    """The task's score on its validation split (what early stopping reads), as a float."""
    was_training = model.training
    try:
        return checked_score(task, model, "validation")
    finally:
        model.train(was_training)


def _diverged(label: str, step: int, value: float, lr: float | None) -> DivergenceError:
    hint = f"lower lr (it was {lr:g}; try {lr / 10:g})" if lr is not None else "lower the lr"
    what = f"became {value}" if not math.isfinite(value) else f"exploded to {value:.3g}"
    return DivergenceError(
        f"{label}: the loss {what} at step {step}; the model's weights were restored "
        f"to what they were before training; {hint}, or check the inputs and targets for "
        f"NaN/inf"
    )


def _check_finite_weights(model: nn.Module, label: str, step: int) -> None:
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise DivergenceError(
                f"{label}: parameter {name!r} became NaN or infinite by step {step}; the "
                f"model's weights were restored to what they were before training; lower lr"
            )


class _Snapshot:
    """Copies of a model's parameters and buffers, restorable into the same tensors.

    Restoring copies into the original tensor objects (not by state-dict key), so it still
    works when a callback wrapped a weight in a parametrization during training.
    """

    def __init__(self, model: nn.Module) -> None:
        tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
        self._saved = [(t, t.detach().clone()) for t in tensors.values()]

    def restore(self) -> None:
        with torch.no_grad():
            for tensor, saved in self._saved:
                tensor.copy_(saved)


class _EarlyStopper:
    """Keeps the best validation score and its weights; says when patience runs out."""

    def __init__(self, model: nn.Module, patience: int | None) -> None:
        self.model = model
        self.patience = patience
        self.best = -math.inf
        self.best_weights: _Snapshot | None = None
        self.bad = 0

    def update(self, score: float) -> bool:
        """Record ``score``; True when training should stop."""
        if self.patience is None:
            return False
        if score > self.best:
            self.best, self.bad = score, 0
            self.best_weights = _Snapshot(self.model)
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.best_weights.restore()


class _Bar:
    def __init__(self, progress: Any, task_id: Any, limit: Budget) -> None:
        self.progress, self.task_id, self.limit = progress, task_id, limit

    def advance(self, step: int, elapsed: float, loss: float) -> None:
        if self.progress is None:
            return
        done = step if self.limit.steps is not None else min(elapsed, self.limit.seconds or 0)
        self.progress.update(self.task_id, completed=done, loss=loss, step=step)


class _ProgressBar:
    """A rich progress bar over steps (or seconds for a time-only budget), or nothing."""

    def __init__(self, enabled: bool, label: str, limit: Budget) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label, self.limit = label, limit
        self.progress: Any = None

    def __enter__(self) -> _Bar:
        if not self.enabled:
            return _Bar(None, None, self.limit)
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.fields[step]}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.progress.__enter__()
        total = self.limit.steps if self.limit.steps is not None else self.limit.seconds
        task_id = self.progress.add_task(self.label, total=total, loss=float("nan"), step=0)
        return _Bar(self.progress, task_id, self.limit)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
