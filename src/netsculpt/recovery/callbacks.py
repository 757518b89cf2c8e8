"""Training callbacks: hooks that ``ns.finetune`` and ``ns.distill`` call at fixed points.

A callback is any object with some of the methods below (all optional; subclassing
:class:`Callback` is a convenience, not a requirement). Steps count from 0. For every step
the loop calls, in this order and for each callback in the order given::

    on_step_start(step, model)     # before the forward pass (e.g. apply masks)
    after_backward(step, model)    # gradients are ready, optimizer.step() not yet taken
    on_step_end(step, model)       # after optimizer.step() (e.g. re-apply masks, regrow)

plus ``on_train_start(model, total_steps)`` once before the first step (``total_steps`` is
``None`` for a time-only budget), ``on_evaluate(step, model, score)`` after each validation
score (``step`` is the number of steps taken so far) and ``on_train_end(model)`` once after
the last step and after the best weights are restored. When training fails (for example
with a :class:`~netsculpt.errors.DivergenceError`), ``on_train_end`` is not called.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["HOOKS", "Callback", "call_hooks"]

#: Every hook name the training loop calls.
HOOKS: tuple[str, ...] = (
    "on_train_start",
    "on_step_start",
    "after_backward",
    "on_step_end",
    "on_evaluate",
    "on_train_end",
)


class Callback:
    """No-op base class for training callbacks; override the hooks you need."""

    def on_train_start(self, model: nn.Module, total_steps: int | None) -> None:
        """Before the first step; ``total_steps`` is ``None`` for a time-only budget."""

    def on_step_start(self, step: int, model: nn.Module) -> None:
        """Before the forward pass of ``step``."""

    def after_backward(self, step: int, model: nn.Module) -> None:
        """After ``loss.backward()`` and before ``optimizer.step()`` of ``step``."""

    def on_step_end(self, step: int, model: nn.Module) -> None:
        """After ``optimizer.step()`` of ``step``."""

    def on_evaluate(self, step: int, model: nn.Module, score: float) -> None:
        """After a validation score was taken, ``step`` steps into training."""

    def on_train_end(self, model: nn.Module) -> None:
        """After the last step (and after the best weights were restored)."""


def call_hooks(callbacks: Iterable[Any], hook: str, *args: Any) -> None:
    """Call ``hook(*args)`` on every callback that defines it, in order."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)
