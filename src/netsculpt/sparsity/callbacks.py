"""Sparse training as training-loop callbacks, so every method composes with
:func:`netsculpt.finetune` (or any loop that calls the same three hooks).

A callback may define ``on_step_start(step, model)``, ``after_backward(step, model)`` (after
``loss.backward()``, before ``optimizer.step()``) and ``on_step_end(step, model)``; ``step``
counts from 0. Masks are kept in place (weights multiplied by their mask after each optimiser
step, gradients of masked weights zeroed), so the state dict keeps its usual keys and the
zeros are real zeros in the weights at every step.

Schedules that change the mask (gradual pruning, regrowth) should not be combined with early
stopping that restores the best weights: those may predate the final mask. Re-apply
``callback.masks.apply(model)`` after such a run (:func:`netsculpt.sparsify` does).

>>> # ns.finetune(model, task, 2000, lr=1e-3, callbacks=[GradualPruning(masks, final=0.9,
>>> #             start=0, end=1500, frequency=10)])
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from netsculpt.sparsity.criteria import magnitude_masks, nm_mask, regrow
from netsculpt.sparsity.masks import MaskCallback, Masks, stored_tensor
from netsculpt.sparsity.schedules import cosine_fraction, cubic_sparsity, update_steps

__all__ = ["SRSTE", "GradualPruning", "RewindCapture", "RigLUpdates"]


def _grads(model: nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    out = {}
    for name in masks:
        grad = stored_tensor(model, name).grad
        if grad is not None:
            out[name] = grad.detach().clone()
    return out


class GradualPruning(MaskCallback):
    """Gradual magnitude pruning on the cubic schedule, optionally with regeneration (GraNet).

    At each step of :func:`~netsculpt.sparsity.schedules.update_steps` the mask is recomputed by
    magnitude for ``cubic_sparsity(step, ...)``; with ``regrow_fraction > 0`` the update then
    drops that cosine-decayed fraction of each layer's kept weights and regrows as many where
    the gradient is largest. :attr:`history` records ``(step, sparsity)`` after each update.
    """

    def __init__(
        self,
        masks: Masks,
        *,
        final: float,
        start: int,
        end: int,
        frequency: int,
        initial: float = 0.0,
        scope: Literal["global", "layer"] = "global",
        regrow_fraction: float = 0.0,
    ) -> None:
        super().__init__(masks)
        self.final, self.initial, self.start, self.end = final, initial, start, end
        self.scope = scope
        self.regrow_fraction = regrow_fraction
        self.steps = set(update_steps(start, end, frequency))
        self.history: list[tuple[int, float]] = []

    def after_backward(self, step: int, model: nn.Module) -> None:
        if step in self.steps:
            target = cubic_sparsity(
                step, initial=self.initial, final=self.final, start=self.start, end=self.end
            )
            grads = _grads(model, self.masks) if self.regrow_fraction > 0 else None
            masks = magnitude_masks(model, self.masks, target, scope=self.scope)
            fraction = cosine_fraction(
                step - self.start, initial=self.regrow_fraction, end=self.end - self.start
            )
            if grads is not None and fraction > 0:
                masks, grown = regrow(model, masks, fraction, grads)
                grown.zero(model)  # grown weights start from zero
            self.masks = masks
            self._on_device(model)
            self.masks.apply(model)
            self.history.append((step, self.masks.sparsity))
        self.masks.mask_gradients(model)


class RigLUpdates(MaskCallback):
    """RigL drop-and-grow every ``update_every`` steps until ``end`` (SET with ``grow="random"``).

    The update fraction follows the cosine decay of RigL; grown weights start at zero; the
    number of kept weights per layer never changes. :attr:`history` records ``(step, number of
    weights moved)``.
    """

    def __init__(
        self,
        masks: Masks,
        *,
        update_every: int,
        end: int,
        drop_fraction: float,
        grow: Literal["gradient", "random"] = "gradient",
        seed: int = 0,
    ) -> None:
        super().__init__(masks)
        self.update_every, self.end, self.drop_fraction, self.grow = (
            update_every,
            end,
            drop_fraction,
            grow,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.history: list[tuple[int, int]] = []

    def after_backward(self, step: int, model: nn.Module) -> None:
        if step > 0 and step % self.update_every == 0 and step < self.end:
            fraction = cosine_fraction(step, initial=self.drop_fraction, end=self.end)
            grads = _grads(model, self.masks) if self.grow == "gradient" else None
            new, grown = regrow(model, self.masks, fraction, grads, generator=self.generator)
            moved = sum(int((new[n] & ~self.masks[n].cpu()).sum()) for n in new)
            grown.zero(model)  # grown weights start from zero, as in RigL
            self.masks = new
            self._on_device(model)
            self.masks.apply(model)
            self.history.append((step, moved))
        self.masks.mask_gradients(model)


class SRSTE:
    """N:M training with the sparse-refined straight-through estimator (Zhou et al., 2021).

    Before each forward pass the dense weights are stored and the model gets their N:M-masked
    copy (the mask recomputed from the dense weights). After the backward pass the dense
    weights are put back and their gradient becomes ``grad(masked) + decay * (~mask * dense)``:
    the straight-through gradient plus the sparse-refined regulariser. Outside a step the model
    holds the masked weights, so evaluation sees the N:M model. :meth:`final_masks` gives the
    masks of the current dense weights.
    """

    def __init__(self, names: list[str], *, n: int, m: int, decay: float) -> None:
        self.names, self.n, self.m, self.decay = list(names), n, m, decay
        self.dense: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _mask(self, model: nn.Module) -> None:
        for name in self.names:
            w = stored_tensor(model, name)
            dense = self.dense.get(name)
            if dense is None or dense.shape != w.shape:
                dense = w.detach().clone()
            self.dense[name] = dense
            self.masks[name] = nm_mask(dense, self.n, self.m).to(w.device)
            w.copy_(dense * self.masks[name].to(w.dtype))

    def on_step_start(self, step: int, model: nn.Module) -> None:
        if step == 0:
            self.dense = {}
        self._mask(model)

    @torch.no_grad()
    def after_backward(self, step: int, model: nn.Module) -> None:
        for name in self.names:
            w = stored_tensor(model, name)
            dense = self.dense[name]
            w.copy_(dense)
            if w.grad is not None:
                w.grad.add_(self.decay * (~self.masks[name]).to(w.dtype) * dense)

    @torch.no_grad()
    def on_step_end(self, step: int, model: nn.Module) -> None:
        for name in self.names:
            self.dense[name] = stored_tensor(model, name).detach().clone()
        self._mask(model)

    def final_masks(self) -> Masks:
        """The N:M masks of the dense weights as they are now."""
        return Masks({n: nm_mask(self.dense[n], self.n, self.m) for n in self.names})


class RewindCapture:
    """Remembers the model's state after ``step`` optimiser steps (0: before training)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.state: dict[str, torch.Tensor] | None = None

    def _take(self, model: nn.Module) -> None:
        self.state = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})

    def on_step_start(self, step: int, model: nn.Module) -> None:
        if step == 0 and self.step == 0:
            self._take(model)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        if step + 1 == self.step:
            self._take(model)
