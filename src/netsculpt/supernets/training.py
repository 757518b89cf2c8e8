"""Train an elastic super-network once, so that every sub-network it holds works.

:func:`train_supernet` trains the weights a :class:`~netsculpt.Supernet` shares between its
sub-networks, in place, with the **sandwich rule** of BigNAS. Every step, on one batch:

1. the **largest** sub-network (the full model) learns from the task: ``task.loss(outputs,
   targets)``; in fine-tuning mode (``largest_loss="dense"``, InstaTune) it learns instead
   from a frozen copy of the dense model as it was before training;
2. the **smallest** sub-network and ``n_random`` sub-networks drawn at random
   (``supernet.sample(rng)``) learn by **in-place distillation** from the largest one's
   outputs of the same step, detached: KL divergence of temperature-softened logits, or, for
   embeddings (a transformers output with ``last_hidden_state`` and no ``logits``),
   ``1 - cosine`` plus mean squared error per token, as :func:`netsculpt.distill` matches
   them (:attr:`SupernetTrainConfig.output_kind` overrides the guess);
3. the gradients of all of them accumulate and the optimiser takes one step (AdamW by
   default; gradients clipped when ``max_grad_norm`` is set).

A drawn sub-network equal to the largest is skipped (it would distil from itself).

**Progressive shrinking** (once-for-all; ``progressive=True``): the first
``progressive_fraction`` of the budget is split evenly into phases in which the smallest and
the random sub-networks come from a narrower space; the rest trains on the whole space. With
``K`` the most options any width choice has, phase ``k`` (``k = 1 .. K-1``) allows only the
``k + 1`` largest options of every width choice (all of a choice's options once it has no
more), with every elastic block kept; after them, depth becomes elastic and every width
allowed (the whole space). A phase that would already be the whole space (the last width
phase of a space without depth choices) is not run separately. The phase of a step is read
from the fraction of the budget spent (steps, or seconds for a time budget).

**Batch norm.** During training every sub-network normalises with its own batch's
statistics, and only the largest updates the running statistics (and their count): after
training they are the full model's. Each sub-network's own statistics are recomputed when it
is taken out, ``supernet.extract(arch, calib=task.calib_batches())`` (a few batches of
training inputs); without ``calib`` (and when running a sub-network inside the
super-network in eval mode) the largest one's statistics are used, which suit small
sub-networks badly.

**Budget, seed, resume.** ``budget`` is what :func:`netsculpt.distill` takes: steps
(``500``), time (``"30s"``, ``"2m"``) or a :class:`~netsculpt.Budget`; it counts the whole
run, resumed parts included. The same seed gives the same weights (for a step budget): the
data come from ``task.train_batches(batch_size=, seed=config.seed + rank)``, and at every
step the sub-networks are drawn from a ``random.Random`` and torch's generator (dropout)
seeded from ``(seed, step)`` (and the rank, for torch), inside a forked random state, so the
caller's is left as it was. With ``checkpoint=<folder>``, the weights (safetensors), the
optimiser's state, the step count, the seconds trained and the config (JSON) are written
every ``checkpoint_every`` steps and at the end; calling again with the same folder resumes
from its last step (the data stream is replayed up to it), and computes what an
uninterrupted run would have. When training fails (a ``KeyboardInterrupt`` included) the
super-network's weights are restored to what they were before the call; the checkpoint
folder keeps the progress.

**Several processes.** When ``torch.distributed`` is initialised (``torchrun
--nproc_per_node N``, gloo on CPU), every process runs this function on its own copy of the
super-network: the passes run under :class:`~torch.nn.parallel.DistributedDataParallel`, so
gradients are averaged across processes; every process draws the same sub-networks, reads
its own shard of the data (``seed + rank``), and only rank 0 writes checkpoints and shows
progress. The effective batch is ``N * batch_size``.

>>> config = ns.ElasticConfig(keep=(0.25, 0.5, 1.0))  # doctest: +SKIP
>>> supernet = ns.elastic(model, example_inputs, config)  # doctest: +SKIP
>>> ns.train_supernet(supernet, task, "10m", checkpoint="runs/supernet")  # doctest: +SKIP
>>> small = supernet.extract(supernet.smallest(), calib=task.calib_batches())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from netsculpt._checks import check_config_fields, check_int, check_number, config_json
from netsculpt._inputs import ExampleInputs, inputs_to
from netsculpt.errors import InputError, TrainingError, UnknownNameError
from netsculpt.export._folder import check_path
from netsculpt.recovery._distill import _main_output, distill_loss
from netsculpt.recovery._validate import check_callbacks, check_models
from netsculpt.recovery.budget import Budget, BudgetLike
from netsculpt.recovery.callbacks import call_hooks
from netsculpt.recovery.config import MAX_SEED, OUTPUT_KINDS
from netsculpt.recovery.train import (
    _EXPLODE,
    _call,
    _check_finite_weights,
    _device_of,
    _diverged,
    _next_batch,
    _ProgressBar,
    _Snapshot,
    _targets_to,
)
from netsculpt.supernets import _train_state as state
from netsculpt.supernets.space import Arch, ElasticSpace
from netsculpt.supernets.supernet import Supernet
from netsculpt.tasks.base import Task, check_task

__all__ = ["LARGEST_LOSSES", "SupernetTrainConfig", "train_supernet"]

#: What the largest sub-network learns from: ``"task"`` (``task.loss``), ``"dense"`` (a frozen
#: copy of the dense model), ``"auto"`` (``"dense"`` when the batches carry no targets).
LARGEST_LOSSES: tuple[str, ...] = ("auto", "task", "dense")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
SCHEDULES: tuple[str, ...] = ("constant", "cosine")
_LABEL = "train_supernet"


def _fail(field: str, value: Any, problem: str, example: str) -> InputError:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return InputError(
        f"SupernetTrainConfig({field}={text}): {problem}; e.g. "
        f"SupernetTrainConfig({field}={example})"
    )


def _one_of(field: str, value: Any, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise UnknownNameError(
            f"SupernetTrainConfig({field}={value!r}) is not known; pass one of "
            f"{', '.join(repr(a) for a in allowed)}"
        )


@dataclass(frozen=True, kw_only=True)
class SupernetTrainConfig:
    """Options of :func:`netsculpt.train_supernet`, as one frozen, JSON-able value.

    Attributes:
        lr: learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        batch_size: passed to ``task.train_batches`` (per process when distributed).
        seed: fixes the data order, the sub-networks drawn and dropout: same seed, same
            weights (for a step budget).
        optimizer: ``"adamw"`` or ``"sgd"`` (with ``momentum``, Nesterov when it is > 0).
        momentum: SGD's momentum, in [0, 1); unused by AdamW.
        lr_schedule: ``"constant"``, or ``"cosine"`` (from ``lr`` to 0 over the budget: its
            steps, or its seconds for a time budget).
        max_grad_norm: clip the norm of the accumulated gradients to this; ``None`` does
            not clip.
        n_random: sub-networks drawn at random each step besides the largest and the
            smallest (the sandwich rule; BigNAS uses 2).
        temperature: softens the logits of both sides of the in-place distillation.
        output_kind: ``"logits"``, ``"embeddings"`` or ``"auto"`` (guessed from the outputs
            as :class:`~netsculpt.DistillConfig` does).
        largest_loss: what the largest sub-network learns from: ``"task"`` (``task.loss``
            on the batch's targets), ``"dense"`` (fine-tuning mode, InstaTune: the outputs
            of a frozen copy of the dense model as it was before training) or ``"auto"``
            (``"dense"`` when the task's batches carry no targets, else ``"task"``).
        dense_alpha: with ``largest_loss="dense"`` and batches that carry targets, the
            largest's loss is ``dense_alpha * match + (1 - dense_alpha) * task.loss``; 1.0
            matches the dense model only.
        progressive: progressive shrinking (see :mod:`netsculpt.supernets.training`).
        progressive_fraction: share of the budget spent in the narrower phases, in (0, 1).
        checkpoint_every: steps between checkpoints (with ``checkpoint=``); a checkpoint is
            also written at the end.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    lr_schedule: Literal["constant", "cosine"] = "constant"
    max_grad_norm: float | None = None
    n_random: int = 2
    temperature: float = 1.0
    output_kind: Literal["auto", "logits", "embeddings"] = "auto"
    largest_loss: Literal["auto", "task", "dense"] = "auto"
    dense_alpha: float = 1.0
    progressive: bool = False
    progressive_fraction: float = 0.5
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        self._number("lr", "1e-3", positive=True)
        self._number("weight_decay", "0.0", minimum=0.0)
        self._int("batch_size", "64", minimum=1)
        self._int("seed", "0", minimum=0)
        if self.seed > MAX_SEED:
            raise _fail("seed", self.seed, "torch takes seeds from 0 to 2**63 - 1", "0")
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        self._number("momentum", "0.9", minimum=0.0)
        if self.momentum >= 1.0:
            raise _fail("momentum", self.momentum, "momentum must be below 1", "0.9")
        _one_of("lr_schedule", self.lr_schedule, SCHEDULES)
        if self.max_grad_norm is not None:
            self._number("max_grad_norm", "1.0", positive=True)
        self._int("n_random", "2", minimum=0)
        self._number("temperature", "1.0", positive=True)
        _one_of("output_kind", self.output_kind, OUTPUT_KINDS)
        _one_of("largest_loss", self.largest_loss, LARGEST_LOSSES)
        self._number("dense_alpha", "1.0", minimum=0.0)
        if self.dense_alpha > 1.0:
            raise _fail("dense_alpha", self.dense_alpha, "a weight in [0, 1]", "1.0")
        if not isinstance(self.progressive, bool):
            raise _fail("progressive", self.progressive, "True or False", "True")
        self._number("progressive_fraction", "0.5", positive=True)
        if self.progressive_fraction >= 1.0:
            raise _fail(
                "progressive_fraction",
                self.progressive_fraction,
                "the whole space needs some of the budget: a share in (0, 1)",
                "0.5",
            )
        self._int("checkpoint_every", "100", minimum=1)
        for name in ("lr", "weight_decay", "momentum", "temperature", "dense_alpha"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "progressive_fraction", float(self.progressive_fraction))
        if self.max_grad_norm is not None:
            object.__setattr__(self, "max_grad_norm", float(self.max_grad_norm))

    def _number(
        self, name: str, example: str, *, positive: bool = False, minimum: float | None = None
    ) -> None:
        value = getattr(self, name)
        try:
            check_number(value, name, strictly_positive=positive, minimum=minimum)
        except InputError as exc:
            raise _fail(name, value, str(exc), example) from None

    def _int(self, name: str, example: str, *, minimum: int) -> None:
        value = getattr(self, name)
        try:
            check_int(value, name, minimum=minimum)
        except InputError as exc:
            raise _fail(name, value, str(exc).split(";")[0], example) from None

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> SupernetTrainConfig:
        """The config :meth:`to_dict` wrote, checked as data.

        Raises:
            InputError: not a mapping, an unknown field, or a value a field refuses.
        """
        return cls(**check_config_fields(cls, data))

    @classmethod
    def from_json(cls, text: str) -> SupernetTrainConfig:
        """The config :meth:`to_json` wrote."""
        return cls.from_dict(config_json(cls, text))


# ------------------------------------------------------------------------------- the call


def train_supernet(
    supernet: Supernet,
    task: Task,
    budget: BudgetLike,
    config: SupernetTrainConfig | None = None,
    *,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Any] = (),
) -> Supernet:
    """Train ``supernet``'s shared weights in place with the sandwich rule; return it.

    See :mod:`netsculpt.supernets.training` for the method (sandwich rule, in-place
    distillation, progressive shrinking, fine-tuning mode, batch norm, several processes).

    Args:
        supernet: made by :func:`netsculpt.elastic` (or :func:`netsculpt.load_supernet`).
        task: supplies ``train_batches`` and ``loss`` (:class:`~netsculpt.Task`).
        budget: steps (``500``), time (``"30s"``, ``"2m"``) or a :class:`~netsculpt.Budget`,
            for the whole run (a resumed run counts the steps and seconds already trained).
        config: a :class:`SupernetTrainConfig`; ``None`` for the defaults.
        progress: show a rich progress bar (rank 0, when stderr is a terminal).
        checkpoint: a folder to write checkpoints to and to resume from.
        callbacks: objects with hooks of :class:`~netsculpt.recovery.Callback`
            (``on_train_start(supernet, total_steps)``, ``on_step_start(step, supernet)``,
            ``after_backward``, ``on_step_end``, ``on_train_end(supernet)``; ``on_evaluate``
            is never called), run on every process.

    Returns:
        ``supernet`` itself, trained, in the mode (train/eval) and with the active
        sub-network it had.

    Raises:
        InputError: checked before any step: ``supernet`` is not a :class:`Supernet`; a
            task that is not a :class:`~netsculpt.Task`; a bad budget, config, checkpoint
            path or callback.
        TrainingError: the task has no training data, or yields no targets where the
            task's loss needs them (pass ``largest_loss="dense"``).
        DivergenceError: the loss became NaN or infinite, or exploded; the weights were
            restored.
        SaveLoadError: the checkpoint folder belongs to another super-network, config or
            number of processes, or is damaged.
    """
    supernet, task, limit, config, folder, hooks = _check_call(
        supernet, task, budget, config, progress, checkpoint, callbacks
    )
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    run = _Run(supernet, task, limit, config, folder, hooks, rank, world, progress)
    return run.train()


def _check_call(
    supernet: Any,
    task: Any,
    budget: Any,
    config: Any,
    progress: Any,
    checkpoint: Any,
    callbacks: Any,
) -> tuple[Supernet, Task, Budget, SupernetTrainConfig, Path | None, tuple[Any, ...]]:
    if not isinstance(supernet, Supernet):
        hint = (
            "make it elastic first: supernet = ns.elastic(model, example_inputs)"
            if isinstance(supernet, nn.Module)
            else "pass the Supernet made by ns.elastic(model, example_inputs)"
        )
        raise InputError(
            f"{_LABEL} takes a Supernet, got {type(supernet).__name__} "
            f"({repr(supernet)[:60]}); {hint}"
        )
    check_models(_LABEL, supernet=supernet)
    task = check_task(task, caller=_LABEL)
    if isinstance(task, Task) and not task.has_training_data:
        raise TrainingError(
            f"{_LABEL}: task {task.name!r} ({type(task).__name__}) has no training data; "
            f"super-network training needs batches: override train_batches() to yield "
            f"(inputs, targets), or use a task that has them, e.g. ns.get_task('mnist1d')"
        )
    try:
        limit = Budget.parse(budget)
    except InputError as exc:
        raise type(exc)(f"{_LABEL}: {exc}") from None
    if config is None:
        config = SupernetTrainConfig()
    elif isinstance(config, Mapping):
        raise InputError(
            f"{_LABEL}: config is a dict; build the config from it: "
            f"config=SupernetTrainConfig.from_dict({repr(dict(config))[:60]})"
        )
    elif not isinstance(config, SupernetTrainConfig):
        raise InputError(
            f"{_LABEL}: config must be a SupernetTrainConfig, got {type(config).__name__} "
            f"({repr(config)[:60]}); e.g. config=ns.SupernetTrainConfig(lr=1e-3, n_random=2)"
        )
    if not isinstance(progress, bool):
        raise InputError(f"{_LABEL}: progress must be True or False, got {progress!r}")
    folder = None if checkpoint is None else check_path(checkpoint, "checkpoint")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise InputError(
            f"{_LABEL}: checkpoint={str(folder)!r} is a file; pass a folder to write the "
            f"checkpoints to (it is created)"
        )
    hooks = check_callbacks(_LABEL, callbacks)
    return supernet, task, limit, config, folder, hooks


# --------------------------------------------------------------------- progressive phases


@dataclass(frozen=True)
class _Phase:
    """Which part of the space the smallest and random sub-networks come from."""

    top: int | None  # the ``top`` largest options of every width choice; None: all
    depth: bool  # depth choices elastic

    def smallest(self, space: ElasticSpace) -> Arch:
        return {c.name: self._allowed(c.options, c.kind)[0] for c in space}

    def sample(self, space: ElasticSpace, rng: random.Random) -> Arch:
        out: Arch = {}
        for c in space:
            allowed = self._allowed(c.options, c.kind)
            out[c.name] = allowed[rng.randrange(len(allowed))]
        return out

    def _allowed(self, options: tuple[Any, ...], kind: str) -> tuple[Any, ...]:
        if kind == "depth":
            return options if self.depth else (True,)
        return options if self.top is None else options[-self.top :]


def _phases(space: ElasticSpace) -> list[_Phase]:
    """The narrower phases, then the whole space (see the module's docstring)."""
    most = max((len(c.options) for c in space if c.kind == "width"), default=1)
    depth = any(c.kind == "depth" for c in space)
    narrow = [_Phase(top, False) for top in range(2, most + 1)]
    if narrow and not depth:
        narrow.pop()  # all widths with no depth choice: already the whole space
    return [*narrow, _Phase(None, True)]


# ---------------------------------------------------------------------- one forward pass


class _Pass(nn.Module):
    """One sub-network's loss on a batch: what DistributedDataParallel wraps.

    ``teacher`` is the main output to match (the largest's, or the dense model's), or
    ``None`` for the task's loss; ``alpha`` weighs the match against ``task.loss`` when the
    batch has targets. Returns the loss and the sub-network's main output, detached.
    """

    def __init__(self, supernet: Supernet, task: Task, config: SupernetTrainConfig) -> None:
        super().__init__()
        self.supernet = supernet
        self.task_loss = task.loss
        self.kind = config.output_kind
        self.temperature = config.temperature

    def forward(
        self,
        arch: Arch,
        inputs: ExampleInputs,
        targets: Any,
        teacher: torch.Tensor | None,
        alpha: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.supernet.set_arch(arch)
        outputs = _call(self.supernet, inputs)
        if teacher is None:
            loss = self.task_loss(outputs, targets)
        else:
            loss = distill_loss(
                outputs,
                teacher,
                inputs=inputs,
                targets=targets if alpha < 1.0 else None,
                task_loss=self.task_loss,
                kind=self.kind,
                temperature=self.temperature,
                alpha=alpha,
                hidden_weight=0.0,
                student_hidden=[],
                teacher_hidden=[],
            )
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TrainingError(
                f"{_LABEL}: the task's loss returned {type(loss).__name__} "
                f"{tuple(getattr(loss, 'shape', ()))}, not a scalar tensor; Task.loss must "
                f"return one number to minimise (e.g. a mean over the batch)"
            )
        loss = loss.reshape(())
        main, _ = _main_output(outputs, self.kind)
        return loss, main.detach()


@contextlib.contextmanager
def _frozen_statistics(norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Batch norm normalises with the batch's statistics and leaves the running ones (and
    their count) as they are: what every sub-network but the largest does."""
    tracking = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, was in zip(norms, tracking, strict=True):
            m.track_running_stats = was


def _mix(*parts: object) -> int:
    """A seed in [0, 2**63) from ``parts``, the same on every process and Python run."""
    text = ":".join(str(p) for p in ("netsculpt.train_supernet", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# -------------------------------------------------------------------------------- the run


class _Run:
    """One call of :func:`train_supernet`, after its arguments were checked."""

    def __init__(
        self,
        supernet: Supernet,
        task: Task,
        limit: Budget,
        config: SupernetTrainConfig,
        folder: Path | None,
        hooks: tuple[Any, ...],
        rank: int,
        world: int,
        progress: bool,
    ) -> None:
        self.supernet, self.task, self.limit, self.config = supernet, task, limit, config
        self.folder, self.hooks, self.rank, self.world = folder, hooks, rank, world
        self.progress = progress
        self.phases = _phases(supernet.space)
        self.identity = state.identity(supernet, config.to_dict(), world)
        self.params = [p for p in supernet.parameters() if p.requires_grad]
        self.norms = [
            m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        if not self.params:
            raise TrainingError(
                f"{_LABEL}: the super-network has no trainable parameters (all have "
                f"requires_grad=False); unfreeze the ones to train"
            )

    # -- schedule ------------------------------------------------------------------------
    def _fraction(self, step: int, seconds: float) -> float:
        """How much of the budget is spent, in [0, 1]."""
        done = 0.0
        if self.limit.steps is not None:
            done = max(done, step / self.limit.steps)
        if self.limit.seconds is not None:
            done = max(done, seconds / self.limit.seconds)
        return min(done, 1.0)

    def _spent(self, step: int, seconds: float) -> bool:
        if self.limit.steps is not None and step >= self.limit.steps:
            return True
        return self.limit.seconds is not None and seconds >= self.limit.seconds

    def _phase(self, fraction: float) -> _Phase:
        narrow = self.phases[:-1]
        share = self.config.progressive_fraction
        if not self.config.progressive or not narrow or fraction >= share:
            return self.phases[-1]
        return narrow[min(int(fraction / share * len(narrow)), len(narrow) - 1)]

    def archs(self, step: int, fraction: float) -> list[Arch]:
        """The sandwich of ``step``: the largest first, then the smallest and the random
        ones (the same on every process); those equal to the largest are left out."""
        space = self.supernet.space
        rng = random.Random(_mix(self.config.seed, "archs", step))
        phase = self._phase(fraction)
        if phase.top is None and phase.depth:
            smallest = self.supernet.smallest()
            drawn = [self.supernet.sample(rng) for _ in range(self.config.n_random)]
        else:
            smallest = phase.smallest(space)
            drawn = [phase.sample(space, rng) for _ in range(self.config.n_random)]
        largest = self.supernet.largest()
        return [largest, *(a for a in (smallest, *drawn) if a != largest)]

    def _lr(self, fraction: float) -> float:
        if self.config.lr_schedule == "cosine":
            return self.config.lr * 0.5 * (1.0 + math.cos(math.pi * fraction))
        return self.config.lr

    # -- set-up --------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                self.params,
                lr=c.lr,
                momentum=c.momentum,
                weight_decay=c.weight_decay,
                nesterov=c.momentum > 0,
            )
        return torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)

    def _batches(self) -> tuple[Iterator[tuple[Any, Any]], str]:
        """The data stream of this process and what the largest learns from."""
        stream = iter(
            self.task.train_batches(
                batch_size=self.config.batch_size, seed=self.config.seed + self.rank
            )
        )
        first = _next_batch(stream, self.task)
        mode = self.config.largest_loss
        no_targets = first[1] is None
        if mode == "auto":
            mode = "dense" if no_targets else "task"
        elif mode == "task" and no_targets and type(self.task).loss is Task.loss:
            raise TrainingError(
                f"{_LABEL}: task {getattr(self.task, 'name', '?')!r} yields no targets, so the "
                f"largest sub-network cannot learn from task.loss; pass "
                f"SupernetTrainConfig(largest_loss='dense') to let it learn from the dense "
                f"model (fine-tuning mode), or override Task.loss"
            )
        return itertools.chain([first], stream), mode

    def _ddp(self, module: _Pass) -> nn.Module:
        if self.world == 1 and not torch.distributed.is_initialized():
            return module
        device = _device_of(self.supernet)
        ids = [device.index or 0] if device.type == "cuda" else None
        # find_unused_parameters when a pass may leave parameters out (dropped blocks, or
        # parameters the output does not depend on); the gradients accumulated under
        # no_sync() are then averaged with the last pass's all the same
        return nn.parallel.DistributedDataParallel(
            module, device_ids=ids, find_unused_parameters=not self._every_pass_uses_all()
        )

    def _every_pass_uses_all(self) -> bool:
        """Whether every sub-network's output depends on every trainable parameter: no depth
        choice, and the largest's output (on the example inputs) reaches them all; slicing a
        weight keeps it in the graph."""
        supernet = self.supernet
        if any(c.kind == "depth" for c in supernet.space):
            return False
        was_training = supernet.training
        supernet.eval()
        try:
            inputs = inputs_to(supernet.example_inputs, _device_of(supernet))
            with torch.enable_grad(), supernet.use(supernet.largest()):
                main, _ = _main_output(_call(supernet, inputs), self.config.output_kind)
                if not main.requires_grad:
                    return False
                grads = torch.autograd.grad(main.float().sum(), self.params, allow_unused=True)
        finally:
            supernet.train(was_training)
        return all(g is not None for g in grads)

    def _dense_teacher(self, mode: str, resumed: bool) -> nn.Module | None:
        if mode != "dense":
            return None
        dense = copy.deepcopy(self.supernet.model)
        if resumed and self.folder is not None:
            state.load_dense(self.folder, dense)
        elif self.folder is not None and self.rank == 0:
            state.write_dense(self.folder, dense)
        for p in dense.parameters():
            p.requires_grad_(False)
        return dense.eval()

    # -- training ------------------------------------------------------------------------
    def train(self) -> Supernet:
        supernet = self.supernet
        was_training, active = supernet.training, supernet.active
        cuda = sorted({p.device.index or 0 for p in self.params if p.device.type == "cuda"})
        before = _Snapshot(supernet)
        try:
            with torch.random.fork_rng(devices=cuda):
                self._loop()
        except BaseException:
            before.restore()
            raise
        finally:
            supernet.train(was_training)
            supernet.active = active
        call_hooks(self.hooks, "on_train_end", supernet)
        return supernet

    def _loop(self) -> None:
        supernet, config = self.supernet, self.config
        wrapped = self._ddp(_Pass(supernet, self.task, config))
        optimizer = self._optimizer()
        resume = None
        if self.folder is not None:
            resume = state.read_checkpoint(self.folder, self.identity)
            if resume is not None:
                state.restore(resume, supernet.model, optimizer)
        step = resume.step if resume is not None else 0
        seconds = resume.seconds if resume is not None else 0.0
        batches, mode = self._batches()
        for _ in range(step):  # replay the data stream up to where the checkpoint stands
            _next_batch(batches, self.task)
        dense = self._dense_teacher(mode, resume is not None)
        device = _device_of(supernet)
        saved_at = step
        call_hooks(self.hooks, "on_train_start", supernet, self.limit.steps)
        started = time.perf_counter() - seconds
        explode_at = math.inf
        with _ProgressBar(self.progress and self.rank == 0, _LABEL, self.limit) as bar:
            while not self._spent(step, seconds):
                fraction = self._fraction(step, seconds)
                archs = self.archs(step, fraction)
                inputs, targets = _next_batch(batches, self.task)
                inputs, targets = inputs_to(inputs, device), _targets_to(targets, device)
                torch.manual_seed(_mix(config.seed, "torch", self.rank, step))
                supernet.train()
                call_hooks(self.hooks, "on_step_start", step, supernet)
                optimizer.zero_grad(set_to_none=True)
                total, largest = self._sandwich(wrapped, archs, inputs, targets, dense)
                elapsed = time.perf_counter() - started
                total, largest, seconds = self._agree(total, largest, elapsed)
                if explode_at == math.inf:  # the first step of this call sets the scale
                    explode_at = _EXPLODE * max(abs(total), 1.0)
                if not math.isfinite(total) or total > explode_at:
                    raise _diverged(_LABEL, step, total, config.lr)
                call_hooks(self.hooks, "after_backward", step, supernet)
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = self._lr(fraction)
                optimizer.step()
                call_hooks(self.hooks, "on_step_end", step, supernet)
                step += 1
                bar.advance(step, seconds, largest)
                if self.folder is not None and step % config.checkpoint_every == 0:
                    self._save(step, seconds, optimizer)
                    saved_at = step
        _check_finite_weights(supernet, _LABEL, step)
        if self.folder is not None and saved_at != step:
            self._save(step, seconds, optimizer)
        if self.world > 1:
            torch.distributed.barrier()

    def _sandwich(
        self,
        wrapped: nn.Module,
        archs: list[Arch],
        inputs: ExampleInputs,
        targets: Any,
        dense: nn.Module | None,
    ) -> tuple[float, float]:
        """Forward and backward every sub-network of the step; gradients accumulate (and
        are averaged across processes in the last backward). Returns the summed loss and
        the largest's."""
        ddp = isinstance(wrapped, nn.parallel.DistributedDataParallel)
        teacher = None
        alpha = 1.0
        if dense is not None:
            with torch.no_grad():
                teacher, _ = _main_output(_call(dense, inputs), self.config.output_kind)
            alpha = self.config.dense_alpha
        total = 0.0
        largest = math.nan
        for i, arch in enumerate(archs):
            last = i == len(archs) - 1
            sync = (
                contextlib.nullcontext()
                if last or not ddp
                else cast(nn.parallel.DistributedDataParallel, wrapped).no_sync()
            )
            with sync, _frozen_statistics(self.norms if i > 0 else []):
                loss, main = wrapped(arch, inputs, targets, teacher, alpha)
                loss.backward()
            value = float(loss.detach())
            total += value
            if i == 0:
                largest = value
                teacher, alpha = main, 1.0  # the others distil from the largest
        return total, largest

    def _agree(self, total: float, largest: float, elapsed: float) -> tuple[float, float, float]:
        """The step's losses averaged over processes, and rank 0's clock, on every process
        (so all of them stop, change phase and diverge at the same step)."""
        if self.world == 1:
            return total, largest, elapsed
        values = torch.tensor(
            [total, largest, elapsed if self.rank == 0 else 0.0], dtype=torch.float64
        )
        torch.distributed.all_reduce(values)
        return (
            float(values[0]) / self.world,
            float(values[1]) / self.world,
            float(values[2]),
        )

    def _save(self, step: int, seconds: float, optimizer: torch.optim.Optimizer) -> None:
        if self.rank != 0 or self.folder is None:
            return
        state.write_checkpoint(
            self.folder,
            self.identity,
            step=step,
            seconds=seconds,
            model=self.supernet.model,
            optimizer=optimizer,
            rng={
                "subnetworks": "random.Random seeded from (seed, step) at every step",
                "torch": "torch.manual_seed from (seed, rank, step) at every step",
                "data": "task.train_batches(seed=seed + rank), replayed up to the step",
            },
        )
