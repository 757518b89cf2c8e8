"""Masks keyed by parameter name, and the means to keep masked weights at zero.

A :class:`Masks` maps a parameter name (``"fc1.weight"``) to a boolean tensor of the same
shape: ``True`` keeps the weight, ``False`` sets it to zero. Masks are applied in one of two
ways:

* :meth:`Masks.apply` multiplies the weights in place. Training loops re-apply it after every
  optimiser step (:class:`MaskCallback` does this for :func:`netsculpt.finetune`), so the
  zeros are real zeros in the weights and the state dict keeps its usual keys.
* :meth:`Masks.attach` registers a parametrisation (``torch.nn.utils.parametrize``) that
  multiplies by the mask in every forward pass; :meth:`Masks.fold` removes it again and
  leaves the masked weights behind, so the zeros become permanent.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
>>> masks = Masks.dense(model)
>>> sorted(masks)
['0.weight', '2.weight']
>>> masks.sparsity
0.0
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from netsculpt._checks import check_names
from netsculpt.errors import SparsityError, UnknownNameError

__all__ = [
    "DEFAULT_LAYER_TYPES",
    "MaskCallback",
    "MaskParametrization",
    "Masks",
    "fold",
    "select_parameters",
    "weight_sparsity",
]

#: Layer types whose ``weight`` a sparsity method acts on unless ``include`` says otherwise.
DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _matches(name: str, selector: str) -> bool:
    if selector.startswith("re:"):
        return re.fullmatch(selector[3:], name) is not None
    return name == selector


def select_parameters(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names of the weights that a sparsity method acts on, in module order.

    By default these are the ``weight`` parameters of every :class:`~torch.nn.Linear` and
    ``Conv1d/2d/3d`` layer. ``include`` and ``exclude`` select layers by qualified module
    name (``"encoder.layer.0.fc1"``) or by a pattern (``"re:encoder\\..*"``); a selector
    may also name the parameter itself (``"fc1.weight"``). An included layer may be of any
    type that has a weight with two or more dimensions.

    Raises:
        UnknownNameError: an exact name in ``include`` or ``exclude`` matches no layer (the
            closest layer names are listed), an ``include`` selector matches nothing, or a
            ``"re:"`` pattern does not compile.
        InputError: ``include`` or ``exclude`` is not a name or a list of names.
    """
    if include is not None:
        include = check_names(include, "include")
    exclude = check_names(exclude, "exclude")
    candidates: list[tuple[str, str, nn.Module]] = []  # (module name, parameter name, module)
    for module_name, module in model.named_modules():
        weight = _original(module, "weight")
        if weight is None or weight.dim() < 2:
            continue
        candidates.append(
            (module_name, f"{module_name}.weight" if module_name else "weight", module)
        )

    def hit(selector: str, module_name: str, param_name: str) -> bool:
        return _matches(module_name, selector) or _matches(param_name, selector)

    for kind, selectors in (("include", include or ()), ("exclude", exclude)):
        for selector in selectors:
            if selector.startswith("re:"):
                try:
                    re.compile(selector[3:])
                except re.error as exc:
                    raise UnknownNameError(
                        f"{kind}={selector!r} is not a valid regular expression ({exc}); write "
                        f"the pattern after 're:' in Python's re syntax, e.g. 're:.*fc.*'"
                    ) from None
                if kind == "exclude":
                    continue  # a pattern that excludes nothing is harmless
            if not any(hit(selector, m, p) for m, p, _ in candidates):
                raise UnknownNameError(
                    f"{kind}={selector!r} matches no layer with a weight in "
                    f"{type(model).__name__}; {_close_names(selector, candidates)}; pass a "
                    f"qualified module name or a pattern such as 're:.*fc.*'"
                )
    chosen: list[str] = []
    for module_name, param_name, module in candidates:
        if include is None:
            if not isinstance(module, DEFAULT_LAYER_TYPES):
                continue
        elif not any(hit(s, module_name, param_name) for s in include):
            continue
        if any(hit(s, module_name, param_name) for s in exclude):
            continue
        chosen.append(param_name)
    return chosen


def _close_names(selector: str, candidates: Sequence[tuple[str, str, nn.Module]]) -> str:
    """The selectable layers closest to ``selector`` (or the first few when none is close)."""
    modules = [m for m, _, _ in candidates]
    if not modules:
        return "it has no layer with a weight of two or more dimensions"
    close = difflib.get_close_matches(selector.removeprefix("re:"), modules, n=4, cutoff=0.5)
    listed = ", ".join(repr(m) for m in modules[:8]) + (", ..." if len(modules) > 8 else "")
    if close:
        return f"close names: {', '.join(repr(c) for c in close)} (all layers: {listed})"
    return f"layers that can be selected: {listed}"


def _split(name: str) -> tuple[str, str]:
    module_name, _, attr = name.rpartition(".")
    return module_name, attr


def _original(module: nn.Module, attr: str) -> torch.Tensor | None:
    """The stored tensor behind ``module.attr``, looking through a parametrisation."""
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original  # type: ignore[index,union-attr]
    value = getattr(module, attr, None)
    return value if isinstance(value, torch.Tensor) else None


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, attr = _split(name)
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        module = None
    if module is None or _original(module, attr) is None:
        raise SparsityError(
            f"mask for parameter {name!r} does not fit {type(model).__name__}: it has no such "
            f"parameter; build the masks from this model (Masks.dense(model) or "
            f"netsculpt.sparsify(model, ...))"
        )
    return module, attr


def stored_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter ``name`` of ``model`` as stored (the original behind a parametrisation)."""
    module, attr = _resolve(model, name)
    tensor = _original(module, attr)
    assert tensor is not None  # _resolve checked it
    return tensor


class MaskParametrization(nn.Module):
    """``weight -> weight * mask``: the parametrisation :meth:`Masks.attach` registers."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


class Masks(Mapping[str, torch.Tensor]):
    """Boolean keep-masks keyed by parameter name (``True`` keeps the weight).

    Build one with :meth:`dense`, :meth:`from_model` or a sparsity method; apply it with
    :meth:`apply` (in place) or :meth:`attach` (parametrisation), make it permanent with
    :meth:`fold`. Per-layer and overall sparsity are :meth:`layer_sparsity` and
    :attr:`sparsity`.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self._masks: dict[str, torch.Tensor] = {
            name: mask.detach().to(torch.bool).clone() for name, mask in masks.items()
        }

    # -- construction -------------------------------------------------------------------
    @classmethod
    def dense(
        cls, model: nn.Module, *, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
    ) -> Masks:
        """All-ones masks for the selected weights of ``model`` (see :func:`select_parameters`)."""
        names = select_parameters(model, include=include, exclude=exclude)
        return cls({n: torch.ones_like(stored_tensor(model, n), dtype=torch.bool) for n in names})

    @classmethod
    def from_model(
        cls, model: nn.Module, *, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
    ) -> Masks:
        """Masks that keep exactly the non-zero weights ``model`` holds now."""
        names = select_parameters(model, include=include, exclude=exclude)
        return cls({n: stored_tensor(model, n).detach() != 0 for n in names})

    # -- mapping ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, sparsity={self.sparsity:.4f})"

    def replace(self, updates: Mapping[str, torch.Tensor]) -> Masks:
        """A copy with some masks replaced (shapes must match)."""
        merged = dict(self._masks)
        for name, mask in updates.items():
            if name not in merged or merged[name].shape != mask.shape:
                raise SparsityError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, which does not match the "
                    f"existing masks; replace only masks that exist, with the same shape"
                )
            merged[name] = mask
        return Masks(merged)

    def to(self, device: torch.device | str) -> Masks:
        """The same masks on ``device`` (returns ``self`` when they are there already)."""
        device = torch.device(device)
        if all(m.device == device for m in self._masks.values()):
            return self
        return Masks({n: m.to(device) for n, m in self._masks.items()})

    # -- statistics ---------------------------------------------------------------------
    def numel(self) -> int:
        """Number of weights covered by the masks."""
        return sum(m.numel() for m in self._masks.values())

    def kept(self) -> int:
        """Number of weights the masks keep."""
        return sum(int(m.sum()) for m in self._masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of the covered weights that the masks set to zero."""
        total = self.numel()
        return 0.0 if total == 0 else 1.0 - self.kept() / total

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of zeros per masked parameter."""
        return {n: 1.0 - float(m.sum()) / m.numel() for n, m in self._masks.items()}

    # -- applying -----------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """Raise :class:`SparsityError` unless every mask fits a parameter of ``model``."""
        for name, mask in self._masks.items():
            tensor = stored_tensor(model, name)
            if tensor.shape != mask.shape:
                raise SparsityError(
                    f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has "
                    f"shape {tuple(tensor.shape)}; build the masks from this model"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the masked weights of ``model`` in place (through any parametrisation)."""
        for name, mask in self._masks.items():
            tensor = stored_tensor(model, name)
            if tensor.shape != mask.shape:
                self.check(model)  # raises the explanatory error
            tensor.mul_(mask.to(tensor.device))
            module, attr = _resolve(model, name)
            if parametrize.is_parametrized(module, attr):
                for p in module.parametrizations[attr]:  # type: ignore[index,union-attr]
                    if isinstance(p, MaskParametrization):
                        p.mask.copy_(mask.to(p.mask.device))
        return model

    @torch.no_grad()
    def zero(self, model: nn.Module) -> nn.Module:
        """Set the weights where a mask is ``True`` to zero (e.g. freshly grown weights)."""
        for name, mask in self._masks.items():
            tensor = stored_tensor(model, name)
            tensor.masked_fill_(mask.to(tensor.device), 0)
        return model

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        """Zero the gradients of masked weights, so an optimiser step leaves them at zero."""
        for name, mask in self._masks.items():
            grad = stored_tensor(model, name).grad
            if grad is not None:
                grad.mul_(mask.to(grad.device))

    def attach(self, model: nn.Module) -> nn.Module:
        """Register a parametrisation that multiplies each weight by its mask in every forward.

        The stored weights keep their values (an optimiser may change them); the module sees
        masked weights. :meth:`fold` removes the parametrisation and keeps the zeros.
        """
        self.check(model)
        for name, mask in self._masks.items():
            module, attr = _resolve(model, name)
            tensor = stored_tensor(model, name)
            parametrize.register_parametrization(
                module, attr, MaskParametrization(mask.to(tensor.device)), unsafe=True
            )
        return model

    def fold(self, model: nn.Module) -> nn.Module:
        """Make the masks permanent: remove netsculpt parametrisations, zero masked weights."""
        self.check(model)
        fold(model)
        return self.apply(model)

    # -- saving ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The masks as ``uint8`` tensors on the CPU (for safetensors)."""
        return {n: m.to(torch.uint8).cpu().contiguous() for n, m in self._masks.items()}

    def save(self, path: str) -> None:
        """Write the masks to a safetensors file."""
        save_file(self.state_dict(), path, metadata={"format": "netsculpt.masks"})

    @classmethod
    def load(cls, path: str) -> Masks:
        """Read masks written by :meth:`save`."""
        return cls({n: t.to(torch.bool) for n, t in load_file(path).items()})


def fold(model: nn.Module) -> nn.Module:
    """Remove every netsculpt mask parametrisation from ``model``, keeping the masked weights.

    Returns the same model, now a plain module whose zeros are stored in its weights, ready for
    ``safetensors`` or ONNX export.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for attr in list(module.parametrizations.keys()):  # type: ignore[union-attr,operator]
            chain = module.parametrizations[attr]  # type: ignore[index]
            if any(isinstance(p, MaskParametrization) for p in chain):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model


def weight_sparsity(
    model: nn.Module, *, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, float]:
    """Fraction of exact zeros in each selected weight of ``model`` as it is now."""
    out: dict[str, float] = {}
    for name in select_parameters(model, include=include, exclude=exclude):
        module, attr = _resolve(model, name)
        tensor = getattr(module, attr).detach()
        out[name] = float((tensor == 0).sum()) / tensor.numel()
    return out


class MaskCallback:
    """Keeps masked weights at zero during :func:`netsculpt.finetune` (or any training loop).

    After the backward pass it zeroes the gradients of masked weights; after the optimiser
    step it multiplies the weights by their masks again (momentum and weight decay would
    otherwise move them).

    >>> # ns.finetune(model, task, 500, lr=1e-3, callbacks=[MaskCallback(masks)])
    """

    def __init__(self, masks: Masks) -> None:
        self.masks = masks

    def _on_device(self, model: nn.Module) -> None:
        """Move the masks to the model's device once, not at every step."""
        if self.masks:
            self.masks = self.masks.to(stored_tensor(model, next(iter(self.masks))).device)

    def on_step_start(self, step: int, model: nn.Module) -> None:
        if step == 0:
            self._on_device(model)
            self.masks.apply(model)

    def after_backward(self, step: int, model: nn.Module) -> None:
        self.masks.mask_gradients(model)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.masks.apply(model)
