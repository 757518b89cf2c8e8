"""``ns.apply``: build the physically smaller copy a plan describes."""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from netsculpt.errors import PlanError
from netsculpt.prune.plan import Plan

__all__ = ["Removed", "apply", "plan_of"]

_PLAN_ATTR = "_netsculpt_plan"


class Removed(nn.Module):
    """Stands in for a removed sub-layer or block.

    ``how="zeros"`` (a residual branch: its contribution becomes zero) or ``"identity"``
    (a whole block: its input passes through). ``arity`` > 1 pads a tuple output with
    ``None`` the way attention modules return ``(output, weights)``.
    """

    def __init__(self, how: str = "zeros", arity: int = 1) -> None:
        super().__init__()
        self.how = how
        self.arity = arity

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
        x = tensors[0]
        y = torch.zeros_like(x) if self.how == "zeros" else x
        if self.arity > 1:
            return (y,) + (None,) * (self.arity - 1)
        return y

    def extra_repr(self) -> str:
        return f"how={self.how!r}, arity={self.arity}"


def plan_of(model: nn.Module) -> Plan | None:
    """The plan a model was pruned with (None for a model netsculpt did not prune)."""
    plan = getattr(model, _PLAN_ATTR, None)
    return plan if isinstance(plan, Plan) else None


def _aliases(model: nn.Module, buffers: bool) -> dict[str, list[tuple[str, str]]]:
    """Tensor name -> every (module path, attribute) holding the same tensor object."""
    items = (
        model.named_buffers(remove_duplicate=False)
        if buffers
        else model.named_parameters(remove_duplicate=False)
    )
    by_id: dict[int, list[str]] = {}
    for name, t in items:
        by_id.setdefault(id(t), []).append(name)
    out: dict[str, list[tuple[str, str]]] = {}
    for names in by_id.values():
        places = [(n.rsplit(".", 1)[0] if "." in n else "", n.rsplit(".", 1)[-1]) for n in names]
        for n in names:
            out[n] = places
    return out


def apply(model: nn.Module, plan: Plan, *, inplace: bool = False) -> nn.Module:
    """Return a physically smaller copy of ``model`` as ``plan`` describes.

    ``model`` is left untouched (unless ``inplace=True``, which saves the memory of a copy
    for very large models). The copy remembers its plan, so :func:`netsculpt.save` can
    write it down.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for name, shape in plan.shapes.items():
        t = params.get(name, buffers.get(name))
        if t is None:
            raise PlanError(
                f"the plan changes {name!r}, which model {type(model).__name__} does not have; "
                f"apply a plan to the same architecture it was made for"
            )
        if tuple(t.shape) != tuple(shape):
            raise PlanError(
                f"the plan expects {name!r} of shape {tuple(shape)}, the model has "
                f"{tuple(t.shape)}; apply the plan to an unpruned model of the architecture "
                f"it was made for"
            )
    p_alias = _aliases(model, buffers=False)
    b_alias = _aliases(model, buffers=True)
    if inplace:
        new = model
    else:
        # do not copy tensors that are about to be replaced: saves a full model of memory
        memo: dict[int, Any] = {}
        for name in plan.tensors:
            t = params.get(name, buffers.get(name))
            if t is not None and id(t) not in memo:
                memo[id(t)] = (
                    nn.Parameter(torch.empty(0), requires_grad=t.requires_grad)
                    if isinstance(t, nn.Parameter)
                    else torch.empty(0)
                )
        new = copy.deepcopy(model, memo)
    done: set[str] = set()
    for name, dims in plan.tensors.items():
        if name in done:
            continue
        is_param = name in params
        orig = params[name] if is_param else buffers[name]
        t = orig.detach()
        changed = False
        for dim, idx in sorted(dims.items()):
            if len(idx) != t.shape[dim] or list(idx) != list(range(t.shape[dim])):
                t = t.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device))
                changed = True
        if not changed and not inplace:
            t = t.clone()
        places = (p_alias if is_param else b_alias).get(name, [])
        replacement: torch.Tensor = (
            nn.Parameter(t, requires_grad=orig.requires_grad) if is_param else t
        )
        for module_path, attr in places:
            module = new.get_submodule(module_path)
            if is_param:
                module._parameters[attr] = cast(nn.Parameter, replacement)
            else:
                module._buffers[attr] = replacement
            full = f"{module_path}.{attr}" if module_path else attr
            done.add(full)
            if inplace:  # let the original tensor go as soon as it is replaced
                params.pop(full, None)
                buffers.pop(full, None)
        del orig, t
    for module_path, attr, value in plan.attrs:
        try:
            module = new.get_submodule(module_path)
        except AttributeError as exc:
            raise PlanError(
                f"the plan sets {attr!r} on module {module_path!r}, which the model does not have"
            ) from exc
        setattr(module, attr, value)
    for module_path, kind in plan.removed:
        how, _, arity = kind.partition(":")
        parent_path, _, child = module_path.rpartition(".")
        parent = new.get_submodule(parent_path)
        setattr(parent, child, Removed(how, int(arity or 1)))
    _fix_module_attributes(new)
    if plan.lowrank:
        from netsculpt.prune.lowrank import factorize_module

        for module_path, rank in plan.lowrank:
            parent_path, _, child = module_path.rpartition(".")
            parent = new.get_submodule(parent_path)
            setattr(parent, child, factorize_module(getattr(parent, child), rank))
    previous = plan_of(model)
    setattr(new, _PLAN_ATTR, previous.then(plan) if previous is not None else plan)
    return new


def _fix_module_attributes(model: nn.Module) -> None:
    """Make the size attributes of standard layers agree with their new weights."""
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and isinstance(w, torch.Tensor):
            module.out_features, module.in_features = int(w.shape[0]), int(w.shape[1])
        elif isinstance(module, nn.modules.conv._ConvTransposeNd) and isinstance(w, torch.Tensor):
            module.in_channels = int(w.shape[0])
            module.out_channels = int(w.shape[1]) * module.groups
        elif isinstance(module, nn.modules.conv._ConvNd) and isinstance(w, torch.Tensor):
            module.out_channels = int(w.shape[0])
            module.in_channels = int(w.shape[1]) * module.groups
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            ref = w if isinstance(w, torch.Tensor) else getattr(module, "running_mean", None)
            if isinstance(ref, torch.Tensor):
                module.num_features = int(ref.shape[0])
        elif isinstance(module, nn.LayerNorm) and isinstance(w, torch.Tensor):
            module.normalized_shape = tuple(int(s) for s in w.shape)
        elif isinstance(module, nn.GroupNorm) and isinstance(w, torch.Tensor):
            module.num_channels = int(w.shape[0])
        elif isinstance(module, nn.Embedding) and isinstance(w, torch.Tensor):
            module.num_embeddings, module.embedding_dim = int(w.shape[0]), int(w.shape[1])
        elif isinstance(module, nn.PReLU) and isinstance(w, torch.Tensor):
            module.num_parameters = int(w.shape[0])
        elif type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor):
            # transformers' GPT-2 style Conv1D: weight is [in, out]
            conv1d: Any = module  # its nf/nx are plain int attributes nn.Module does not declare
            conv1d.nf = int(w.shape[1])
            if hasattr(conv1d, "nx"):
                conv1d.nx = int(w.shape[0])
        elif isinstance(module, nn.RMSNorm) and isinstance(w, torch.Tensor):
            module.normalized_shape = tuple(int(s) for s in w.shape)
