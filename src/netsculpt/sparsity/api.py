"""``ns.sparsify``: apply one sparsity method, given as a config value, to a copy of a model.

>>> import torch
>>> from torch import nn
>>> import netsculpt as ns
>>> from netsculpt.sparsity import MagnitudeConfig
>>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
>>> result = ns.sparsify(model, MagnitudeConfig(sparsity=0.75))
>>> round(result.sparsity, 4)
0.75
>>> int((result.model[0].weight == 0).sum()) + int((result.model[2].weight == 0).sum())
480
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netsculpt.errors import InputError, SparsityError
from netsculpt.sparsity._training import train
from netsculpt.sparsity._validate import check_sparsify_call
from netsculpt.sparsity.callbacks import SRSTE, GradualPruning, RigLUpdates
from netsculpt.sparsity.config import (
    GradualConfig,
    GraNetConfig,
    LotteryTicketConfig,
    MagnitudeConfig,
    NMConfig,
    RandomConfig,
    RigLConfig,
    SparsityConfig,
)
from netsculpt.sparsity.criteria import magnitude_masks, nm_masks, nm_skip_reason, random_masks
from netsculpt.sparsity.lottery import run_lottery
from netsculpt.sparsity.masks import MaskCallback, Masks, fold, select_parameters

__all__ = ["SparseResult", "sparsify"]


@dataclass(frozen=True)
class SparseResult:
    """What :func:`sparsify` returns.

    Attributes:
        model: the sparse model, a copy of the input: a plain module (no parametrisation)
            whose masked weights are stored as zeros.
        masks: the final masks, keyed by parameter name (``True`` keeps the weight).
        config: the config that was applied.
        skipped: layers the method left dense, with the reason (e.g. an N:M group size that
            does not divide the input dimension).
        history: ``(step, value)`` pairs recorded while training: the sparsity after each mask
            update (gradual, GraNet, lottery rounds) or the number of weights moved (RigL).
        steps: optimiser steps taken in all.
        control: for a lottery ticket with ``control=True``, the same mask trained from a
            fresh random initialisation for the same budget; otherwise ``None``.
        rewound: for a lottery ticket, the masked weights it was rewound to (a state dict).
    """

    model: nn.Module
    masks: Masks
    config: SparsityConfig
    skipped: dict[str, str] = field(default_factory=dict)
    history: tuple[tuple[int, float], ...] = ()
    steps: int = 0
    control: nn.Module | None = None
    rewound: dict[str, torch.Tensor] | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the masked weights."""
        return self.masks.sparsity

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of zeros in each masked weight."""
        return self.masks.layer_sparsity()


@dataclass(frozen=True)
class _Run:
    """What a method runner needs besides the model and its config."""

    task: Any
    budget: int | None
    lr: float
    seed: int
    progress: bool
    names: list[str]

    def fit(self, model: nn.Module, steps: int, callbacks: Sequence[Any]) -> nn.Module:
        return train(
            model,
            self.task,
            steps,
            lr=self.lr,
            seed=self.seed,
            callbacks=callbacks,
            progress=self.progress,
        )


def _check_budget(config: SparsityConfig, task: Any, budget: Any) -> int | None:
    name = type(config).__name__
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InputError(
                f"sparsify: budget={budget!r} must be a whole number of optimiser steps; pass "
                f"e.g. budget=1000 (sparse training schedules are laid out in steps)"
            )
        if budget <= 0:
            raise InputError(
                f"sparsify: budget={budget} leaves no training steps; pass a positive number "
                f"of steps, e.g. budget=1000, or budget=None to prune without training"
            )
    if config.trains and (task is None or budget is None):
        raise InputError(
            f"sparsify: {name} trains the model, so it needs task= (an ns.Task with training "
            f"data) and budget= (optimiser steps); got task={task!r}, budget={budget!r}"
        )
    if budget is not None and task is None:
        raise InputError(
            f"sparsify: budget={budget} was given without a task to train on; pass task=, or "
            f"budget=None to prune without training"
        )
    if task is not None and budget is None:
        raise InputError(
            f"sparsify: task={task!r} was given with budget=None, so {name} would not train on "
            f"it; pass budget= (optimiser steps, e.g. budget=1000) to fine-tune with the mask "
            f"fixed, or leave task out"
        )
    return budget


def sparsify(
    model: nn.Module,
    config: SparsityConfig,
    *,
    task: Any = None,
    budget: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> SparseResult:
    """Apply the sparsity method ``config`` to a copy of ``model``; ``model`` is untouched.

    Args:
        model: the model to sparsify.
        config: a method config: :class:`~netsculpt.sparsity.MagnitudeConfig`,
            :class:`~netsculpt.sparsity.GradualConfig`, :class:`~netsculpt.sparsity.GraNetConfig`,
            :class:`~netsculpt.sparsity.LotteryTicketConfig`,
            :class:`~netsculpt.sparsity.RandomConfig`, :class:`~netsculpt.sparsity.NMConfig` or
            :class:`~netsculpt.sparsity.RigLConfig`.
        task: an :class:`netsculpt.Task` with training data; needed by the methods that train
            (gradual, GraNet, lottery, RigL, SR-STE) and to fine-tune after a one-shot mask.
        budget: optimiser steps. One-shot methods fine-tune for ``budget`` steps with the mask
            fixed (``None``: no training); training methods lay their schedule out over it
            (a lottery ticket trains densely for ``budget`` steps, then ``budget -
            rewind_step`` steps per round, so ``result.steps`` counts more).
        lr: learning rate passed to :func:`netsculpt.finetune`.
        seed: seeds random masks, data order and re-initialisation.
        progress: show progress bars while training.

    Raises:
        InputError: checked before anything is copied or trained: a model that is not an
            ``nn.Module`` or has meta, NaN or infinite weights; a config that is not a config
            instance; a task that is not a :class:`~netsculpt.Task`; a budget that is zero,
            negative or not whole steps; a training method without a task and a budget, or a
            task without a budget; a bad ``lr``, ``seed`` or ``progress``.
        UnknownNameError: ``include`` or ``exclude`` names a layer the model does not have
            (close names are listed).
        SparsityError: a selection with no weight in it, a schedule that does not fit the
            budget, an N:M group size that fits no selected layer, or masks that do not fit.
    """
    model, config = check_sparsify_call(
        model, config, task=task, lr=lr, seed=seed, progress=progress
    )
    budget = _check_budget(config, task, budget)
    names = select_parameters(model, include=config.include, exclude=config.exclude)
    if not names:
        raise SparsityError(
            f"sparsify: {type(config).__name__}(include={config.include!r}, "
            f"exclude={config.exclude!r}) selects no weight of {type(model).__name__}, so "
            f"nothing would be sparsified; by default every Linear and Conv1d/2d/3d weight is "
            f"selected: include other layers by name (include=('name',)) or exclude fewer"
        )
    _check_fits(model, config, names, budget)
    runner = _RUNNERS.get(type(config))
    if runner is None:
        raise InputError(
            f"sparsify: {type(config).__name__} has no runner; subclass configs are not methods "
            f"of their own, pass one of {sorted(c.__name__ for c in _RUNNERS)}"
        )
    work = copy.deepcopy(model)
    run = _Run(task=task, budget=budget, lr=lr, seed=seed, progress=progress, names=names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = runner(work, config, run)
    fold(result.model)
    result.masks.apply(result.model)
    return result


def _check_fits(
    model: nn.Module, config: SparsityConfig, names: list[str], budget: int | None
) -> None:
    """Settings that would sparsify nothing: an N:M size that fits no layer, RigL without an
    update within its budget."""
    if isinstance(config, NMConfig):
        skipped = {n: nm_skip_reason(model, n, config.m) for n in names}
        if all(skipped.values()):
            reasons = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:4])
            raise SparsityError(
                f"sparsify: NMConfig(n={config.n}, m={config.m}) fits none of the selected "
                f"layers ({reasons}), so nothing would be sparsified; pass an m that divides "
                f"their input dimensions, or include other layers"
            )
    if isinstance(config, RigLConfig) and budget is not None:
        end = max(1, int(config.end_fraction * budget))
        if config.update_every >= end:
            raise SparsityError(
                f"sparsify: RigLConfig(update_every={config.update_every}) makes no mask update "
                f"before step {end} (end_fraction={config.end_fraction} of budget={budget}), so "
                f"the mask would never change; pass update_every < {end}, e.g. "
                f"update_every={max(1, end // 10)}, or a larger budget"
            )


def _one_shot_then_train(
    model: nn.Module, config: SparsityConfig, run: _Run, masks: Masks, skipped: dict[str, str]
) -> SparseResult:
    masks.apply(model)
    steps = 0
    if run.budget is not None:
        model = run.fit(model, run.budget, [MaskCallback(masks)])
        steps = run.budget
    return SparseResult(model=model, masks=masks, config=config, skipped=skipped, steps=steps)


def _magnitude(model: nn.Module, config: MagnitudeConfig, run: _Run) -> SparseResult:
    dense = Masks.dense(model, include=config.include, exclude=config.exclude)
    masks = magnitude_masks(model, dense, config.sparsity, scope=config.scope)
    return _one_shot_then_train(model, config, run, masks, {})


def _random(model: nn.Module, config: RandomConfig, run: _Run) -> SparseResult:
    generator = torch.Generator().manual_seed(run.seed)
    masks = random_masks(
        model, run.names, config.sparsity, distribution=config.distribution, generator=generator
    )
    return _one_shot_then_train(model, config, run, masks, {})


def _nm(model: nn.Module, config: NMConfig, run: _Run) -> SparseResult:
    masks, skipped = nm_masks(model, run.names, config.n, config.m)
    if config.method == "magnitude":
        return _one_shot_then_train(model, config, run, masks, skipped)
    assert run.budget is not None  # _check_budget made sure
    callback = SRSTE(list(masks), n=config.n, m=config.m, decay=config.decay)
    model = run.fit(model, run.budget, [callback])
    masks = callback.final_masks()
    return SparseResult(model=model, masks=masks, config=config, skipped=skipped, steps=run.budget)


def _schedule_end(config: GradualConfig, budget: int) -> int:
    end = config.end_step if config.end_step is not None else max(1, (3 * budget) // 4)
    if end <= config.start_step or end >= budget:
        raise SparsityError(
            f"{type(config).__name__}(start_step={config.start_step}, end_step={end}) does not "
            f"fit budget={budget}: the schedule must start before it ends and end before the "
            f"budget is spent; pass end_step < {budget} and start_step < end_step, or a larger "
            f"budget"
        )
    return end


def _gradual(model: nn.Module, config: GradualConfig, run: _Run) -> SparseResult:
    assert run.budget is not None
    end = _schedule_end(config, run.budget)
    masks = Masks.dense(model, include=config.include, exclude=config.exclude)
    regrow_fraction = 0.0
    if isinstance(config, GraNetConfig):
        regrow_fraction = config.regrow_fraction
        if config.initial_sparsity > 0:
            generator = torch.Generator().manual_seed(run.seed)
            masks = random_masks(
                model,
                run.names,
                config.initial_sparsity,
                distribution=config.initial_distribution,
                generator=generator,
            )
    masks.apply(model)
    callback = GradualPruning(
        masks,
        final=config.sparsity,
        initial=config.initial_sparsity,
        start=config.start_step,
        end=end,
        frequency=config.frequency,
        scope=config.scope,
        regrow_fraction=regrow_fraction,
    )
    model = run.fit(model, run.budget, [callback])
    return SparseResult(
        model=model,
        masks=callback.masks,
        config=config,
        history=tuple(callback.history),
        steps=run.budget,
    )


def _rigl(model: nn.Module, config: RigLConfig, run: _Run) -> SparseResult:
    assert run.budget is not None
    generator = torch.Generator().manual_seed(run.seed)
    if config.init == "random":
        masks = random_masks(
            model, run.names, config.sparsity, distribution=config.distribution, generator=generator
        )
    else:
        dense = Masks.dense(model, include=config.include, exclude=config.exclude)
        masks = magnitude_masks(
            model,
            dense,
            config.sparsity,
            scope="global" if config.distribution == "erk" else "layer",
        )
    masks.apply(model)
    end = max(1, int(config.end_fraction * run.budget))
    callback = RigLUpdates(
        masks,
        update_every=config.update_every,
        end=end,
        drop_fraction=config.drop_fraction,
        grow=config.grow,
        seed=run.seed,
    )
    model = run.fit(model, run.budget, [callback])
    return SparseResult(
        model=model,
        masks=callback.masks,
        config=config,
        history=tuple((s, float(k)) for s, k in callback.history),
        steps=run.budget,
    )


def _lottery(model: nn.Module, config: LotteryTicketConfig, run: _Run) -> SparseResult:
    assert run.budget is not None
    out = run_lottery(model, config, run.budget, run.fit, seed=run.seed)
    return SparseResult(
        model=out.model,
        masks=out.masks,
        config=config,
        history=tuple(out.history),
        steps=out.steps,
        control=out.control,
        rewound=out.rewound,
    )


_RUNNERS: dict[type, Callable[[nn.Module, Any, _Run], SparseResult]] = {
    MagnitudeConfig: _magnitude,
    RandomConfig: _random,
    NMConfig: _nm,
    GradualConfig: _gradual,
    GraNetConfig: _gradual,
    RigLConfig: _rigl,
    LotteryTicketConfig: _lottery,
}
