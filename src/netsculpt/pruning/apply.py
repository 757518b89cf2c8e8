"""``ns.apply``: build the physically smaller copy a plan describes."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from netsculpt._checks import check_model
from netsculpt.errors import InputError, PlanError
from netsculpt.pruning._factorized import factorize_module
from netsculpt.pruning._moe_config import sync_config
from netsculpt.pruning._residual import check_norm, resize_norm, sync_hidden_size
from netsculpt.pruning._rewrite import install_slices, prepare_slices
from netsculpt.pruning.plan import (
    EVERY_LAYER,
    MAX_ARITY,
    REMOVED_KINDS,
    Plan,
    is_size_attribute,
)

__all__ = ["Removed", "apply", "check_plan", "plan_of"]

_PLAN_ATTR = "_netsculpt_plan"


class Removed(nn.Module):
    """Stands in for a removed sub-layer or block.

    ``how="zeros"`` (a residual branch: its contribution becomes zero) or ``"identity"``
    (a whole block: its input passes through). ``arity`` > 1 pads a tuple output with
    ``None`` the way attention modules return ``(output, weights)``.
    """

    def __init__(self, how: str = "zeros", arity: int = 1) -> None:
        super().__init__()
        if how not in REMOVED_KINDS:
            raise InputError(f"Removed(how={how!r}): how must be one of {REMOVED_KINDS}")
        if isinstance(arity, bool) or not isinstance(arity, int) or not 1 <= arity <= MAX_ARITY:
            raise InputError(f"Removed(arity={arity!r}): arity must be an int in [1, {MAX_ARITY}]")
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


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _mismatch(problem: str) -> PlanError:
    return PlanError(
        f"{problem}; apply a plan to an unpruned model of the architecture it was made for"
    )


def _index_tensor(name: str, dim: int, idx: Any, size: int) -> torch.Tensor | None:
    """The kept indices of one dimension as a tensor (None: all kept), checked first."""
    where = f"the plan's kept indices of {name!r} along dimension {dim}"
    if isinstance(idx, torch.Tensor):
        if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex:
            raise PlanError(f"{where} must be a 1-D integer tensor, got {idx.dtype} {idx.shape}")
        if idx.dtype == torch.bool:
            raise PlanError(f"{where} must be integers, got a bool tensor")
        idx = idx.tolist() if idx.numel() <= size else idx
    if isinstance(idx, (str, bytes, Mapping)) or not hasattr(idx, "__len__"):
        raise PlanError(f"{where} must be a sequence of integers, got {_short(idx)}")
    try:
        count = len(idx)
    except OverflowError:
        count = size + 1
    if count > size:  # bounded before anything is allocated
        raise _mismatch(f"{where} holds {count} indices, more than the {size} there are")
    if not all(type(i) is int for i in idx):
        bad = next((i for i in idx if not _is_int(i)), None)
        if bad is not None:
            raise PlanError(f"{where} must be integers, got {_short(bad)} ({type(bad).__name__})")
        idx = [int(i) for i in idx]
    if len(idx) == size and all(i == k for k, i in enumerate(idx)):
        return None
    t = torch.as_tensor(list(idx), dtype=torch.long)
    if t.numel() and (int(t[0]) < 0 or int(t[-1]) >= size or not bool((t[1:] > t[:-1]).all())):
        raise PlanError(
            f"{where} must be unique, sorted ascending and within [0, {size}), got "
            f"{_short(tuple(int(i) for i in t[:8]))}{' ...' if t.numel() > 8 else ''}"
        )
    return t


def check_plan(model: nn.Module, plan: Plan) -> dict[str, dict[int, torch.Tensor | None]]:
    """Check that ``plan`` fits ``model`` in every respect, before anything is changed.

    The tensors the plan slices exist with the shapes it expects; indices are integers,
    unique, sorted and in range; dimensions are within each tensor's rank; attribute updates
    only lower integer size attributes the module already has (:func:`is_size_attribute`);
    removed and factorised modules exist. Returns the kept indices per tensor and dimension,
    as tensors (None where a dimension is kept whole). Raises :class:`PlanError`.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    modules = dict(model.named_modules(remove_duplicate=False))
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in plan.shapes.items():
        t = params.get(name, buffers.get(name)) if isinstance(name, str) else None
        if t is None:
            raise PlanError(
                f"the plan changes {_short(name)}, which model {type(model).__name__} does not "
                f"have; apply a plan to the same architecture it was made for"
            )
        if tuple(t.shape) != tuple(shape):
            raise _mismatch(
                f"the plan expects {name!r} of shape {_short(tuple(shape))}, the model has "
                f"{tuple(t.shape)}"
            )
        shapes[name] = tuple(t.shape)
    indices: dict[str, dict[int, torch.Tensor | None]] = {}
    for name, dims in plan.tensors.items():
        if name not in shapes:
            raise PlanError(
                f"the plan slices {_short(name)} without giving its original shape; build "
                f"plans with netsculpt.plan or Plan.from_json"
            )
        shape = shapes[name]
        indices[name] = {}
        for dim, idx in dims.items():
            if not _is_int(dim) or not 0 <= int(dim) < len(shape):
                raise _mismatch(
                    f"the plan slices {name!r} (shape {shape}) along dimension {_short(dim)}, "
                    f"outside its rank {len(shape)}"
                )
            indices[name][int(dim)] = _index_tensor(name, int(dim), idx, shape[int(dim)])
    for module_path, attr, value in plan.attrs:
        module = modules.get(module_path) if isinstance(module_path, str) else None
        if module is None:
            raise PlanError(
                f"the plan sets {_short(attr)} on module {_short(module_path)}, which the model "
                f"does not have"
            )
        current = vars(module).get(attr) if isinstance(attr, str) else None
        if not is_size_attribute(attr) or not _is_int(current):
            raise PlanError(
                f"the plan sets {_short(attr)} on {module_path!r}, which is not an integer size "
                f"attribute of {type(module).__name__}; plans only lower sizes such as groups, "
                f"num_heads or split_size"
            )
        if not _is_int(value) or not 0 <= int(value) <= int(cast(int, current)):
            raise PlanError(
                f"the plan sets {module_path}.{attr} to {_short(value)}; it must be an integer "
                f"in [0, {current}] (the size is {current} before pruning)"
            )
    removed_paths = []
    for module_path, kind in plan.removed:
        if not isinstance(module_path, str) or not module_path or module_path not in modules:
            raise PlanError(
                f"the plan removes module {_short(module_path)}, which the model does not have"
            )
        parent_path, _, child = module_path.rpartition(".")
        if child not in modules[parent_path]._modules:
            raise PlanError(f"the plan removes {module_path!r}, which is not a child module")
        how, _, arity = (kind if isinstance(kind, str) else "").partition(":")
        if how not in REMOVED_KINDS or not (arity == "" or arity.isdigit()):
            raise PlanError(f"the plan removes {module_path!r} as {_short(kind)}, not a known kind")
        if arity and not 1 <= int(arity) <= MAX_ARITY:
            raise PlanError(
                f"the plan removes {module_path!r} with arity {arity}, not in [1, {MAX_ARITY}]"
            )
        removed_paths.append(module_path)
    factorised: set[str] = set()
    for module_path, rank in plan.lowrank:
        module = modules.get(module_path) if isinstance(module_path, str) else None
        if module is None or not module_path or module_path in factorised:
            raise PlanError(
                f"the plan factorises module {_short(module_path)}, which the model does not "
                f"have (or the plan names it twice)"
            )
        if any(module_path == r or module_path.startswith(r + ".") for r in removed_paths):
            raise PlanError(f"the plan factorises {module_path!r}, which it also removes")
        factorised.add(module_path)
        _check_rank(module_path, module, rank, plan, indices)
    _check_norms(plan, modules, removed_paths, indices)
    _check_lists(plan, modules)
    _check_gathers(plan, shapes, indices)
    for module_path, _precision in plan.precision:
        if module_path != EVERY_LAYER and module_path not in modules:
            raise PlanError(
                f"the plan gives a precision to module {_short(module_path)}, which the model "
                f"does not have; name the model's modules (or '*' for every layer)"
            )
    return indices


def _check_gathers(
    plan: Plan,
    shapes: Mapping[str, tuple[int, ...]],
    indices: dict[str, dict[int, torch.Tensor | None]],
) -> None:
    """Each gather names a tensor of the plan, two distinct dimensions, one list of kept
    positions per index along ``by``, all as long; ``indices`` gains the tensors gathered."""
    seen: set[tuple[str, int]] = set()
    for entry in plan.gathers:
        if not isinstance(entry, (tuple, list)) or len(entry) != 4:
            raise PlanError(f"the plan gathers {_short(entry)}, not (tensor, dim, by, kept)")
        name, dim, by, rows = entry
        shape = shapes.get(name) if isinstance(name, str) else None
        if shape is None:
            raise PlanError(
                f"the plan gathers {_short(name)} without giving its original shape; build "
                f"plans with netsculpt.plan or Plan.from_json"
            )
        if not (_is_int(dim) and _is_int(by) and 0 <= dim < len(shape) and 0 <= by < len(shape)):
            raise _mismatch(
                f"the plan gathers {name!r} (shape {shape}) along dimension {_short(dim)} by "
                f"{_short(by)}, outside its rank {len(shape)}"
            )
        if dim == by or (name, dim) in seen or indices.get(name, {}).get(int(dim)) is not None:
            raise PlanError(
                f"the plan gathers {name!r} along dimension {dim} by {by}: by itself, twice, or "
                f"as well as slicing it there; write the plan again with netsculpt.plan"
            )
        seen.add((name, int(dim)))
        if not isinstance(rows, (tuple, list)) or len(rows) != shape[by]:
            raise _mismatch(
                f"the plan gathers {name!r} with {_short(rows)} lists of kept positions, not "
                f"one per index of dimension {by} ({shape[by]})"
            )
        where = f"{name}[by {by}]"
        counts = set()
        for row in rows:
            idx = _index_tensor(where, int(dim), row, shape[dim])
            counts.add(shape[dim] if idx is None else int(idx.numel()))
        if len(counts) != 1 or 0 in counts:
            raise PlanError(
                f"the plan gathers {name!r} keeping {sorted(counts)} positions along dimension "
                f"{dim}; every index of dimension {by} must keep the same number, at least one"
            )
        indices.setdefault(name, {})


def _gather(t: torch.Tensor, dim: int, by: int, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """``t`` with, for each index ``e`` along ``by``, the positions ``rows[e]`` along ``dim``."""
    inner = dim - 1 if dim > by else dim
    parts = [
        t.select(by, e).index_select(inner, torch.as_tensor(row, dtype=torch.long, device=t.device))
        for e, row in enumerate(rows)
    ]
    return torch.stack(parts, dim=by)


def _check_lists(plan: Plan, modules: Mapping[str, nn.Module]) -> None:
    """Each module list a plan shortens exists once, as an ``nn.ModuleList`` of the length
    the plan was made for, and keeps at least one entry, by sorted unique positions."""
    seen: set[str] = set()
    for entry in plan.lists:
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise PlanError(
                f"the plan keeps list entries as {_short(entry)}, not (module, size, kept)"
            )
        module_path, size, kept = entry
        module = modules.get(module_path) if isinstance(module_path, str) else None
        if not isinstance(module, nn.ModuleList) or module_path in seen:
            raise PlanError(
                f"the plan keeps entries of {_short(module_path)}, which is not a ModuleList of "
                f"the model (or the plan names it twice); apply a plan to the architecture it "
                f"was made for"
            )
        seen.add(module_path)
        if size != len(module):
            raise _mismatch(
                f"the plan expects {module_path!r} to hold {_short(size)} entries, the model's "
                f"holds {len(module)}"
            )
        _index_tensor(module_path, 0, kept, len(module))
        if not kept:
            raise PlanError(f"the plan keeps no entry of {module_path!r}; keep at least one")


def _keep_entries(model: nn.Module, lists: Sequence[tuple[str, int, tuple[int, ...]]]) -> None:
    """Shorten each module list to its kept entries, renumbered from 0; lists nested in an
    entry of another are shortened first, while their recorded (original) paths hold."""
    for module_path, _size, kept in sorted(lists, key=lambda e: -e[0].count(".")):
        entries = model.get_submodule(module_path)._modules
        entries_kept = [entries[str(i)] for i in kept]
        entries.clear()
        entries.update((str(j), module) for j, module in enumerate(entries_kept))


def _check_norms(
    plan: Plan,
    modules: Mapping[str, nn.Module],
    removed_paths: list[str],
    indices: Mapping[str, Mapping[int, torch.Tensor | None]],
) -> None:
    """Each norm a plan resizes exists once, is one netsculpt resizes, and its weight is
    sliced to the width the plan gives it."""
    seen: set[str] = set()
    for entry in plan.norms:
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise PlanError(f"the plan resizes a norm as {_short(entry)}, not (module, D, d)")
        module_path, before, after = entry
        module = modules.get(module_path) if isinstance(module_path, str) else None
        if module is None or module_path in seen:
            raise PlanError(
                f"the plan resizes the norm {_short(module_path)}, which the model does not "
                f"have (or the plan names it twice)"
            )
        if any(module_path == r or module_path.startswith(r + ".") for r in removed_paths):
            raise PlanError(f"the plan resizes the norm {module_path!r}, which it also removes")
        if not _is_int(before) or not _is_int(after):
            raise PlanError(
                f"the plan resizes the norm {module_path!r} from {_short(before)} to "
                f"{_short(after)} channels; both must be integers"
            )
        seen.add(module_path)
        check_norm(module_path, module, int(before), int(after))
        weight = f"{module_path}.weight" if module_path else "weight"
        if isinstance(getattr(module, "weight", None), torch.Tensor):
            idx = indices.get(weight, {}).get(0)
            kept = int(before) if idx is None else int(idx.numel())
            if kept != int(after):
                raise PlanError(
                    f"the plan resizes the norm {module_path!r} to {after} channels but keeps "
                    f"{kept} of its weight; write the plan again with netsculpt.plan"
                )


def _check_rank(
    path: str,
    module: nn.Module,
    rank: Any,
    plan: Plan,
    indices: Mapping[str, Mapping[int, torch.Tensor | None]],
) -> None:
    groups = {(m, a): v for m, a, v in plan.attrs}.get(
        (path, "groups"), getattr(module, "groups", 1)
    )
    if not isinstance(module, (nn.Linear, nn.Conv2d)) or groups != 1:
        raise PlanError(
            f"the plan factorises {path!r}, a {type(module).__name__}; only Linear and ungrouped "
            f"Conv2d layers can be factorised"
        )
    shape = list(module.weight.shape)
    for dim, t in indices.get(f"{path}.weight", {}).items():
        if t is not None:
            shape[dim] = int(t.numel())
    most = min(shape[0], int(torch.Size(shape[1:]).numel()))
    if not _is_int(rank) or not 1 <= int(rank) <= most:
        raise PlanError(
            f"the plan factorises {path!r} to rank {_short(rank)}; it must be an integer in "
            f"[1, {most}] for that layer"
        )


def apply(model: nn.Module, plan: Plan, *, inplace: bool = False) -> nn.Module:
    """Return a physically smaller copy of ``model`` as ``plan`` describes.

    ``model`` is left untouched (unless ``inplace=True``, which saves the memory of a copy
    for very large models). The copy remembers its plan, so :func:`netsculpt.save` can
    write it down. The whole plan is checked against ``model`` first
    (:func:`check_plan`): a plan that does not fit is refused before anything changes,
    also in place.
    """
    check_model(model)
    if not isinstance(plan, Plan):
        raise InputError(
            f"plan must be a netsculpt.Plan, got {type(plan).__name__} ({_short(plan)}); make "
            f"one with netsculpt.plan(...) or read one with Plan.from_json(text)"
        )
    if not isinstance(inplace, bool):
        raise InputError(f"inplace must be True or False, got {_short(inplace)}")
    indices = check_plan(model, plan)
    slices = prepare_slices(model, plan.slices) if plan.slices else {}
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    p_alias = _aliases(model, buffers=False)
    b_alias = _aliases(model, buffers=True)
    if inplace:
        new = model
    else:
        # do not copy tensors that are about to be replaced: saves a full model of memory
        memo: dict[int, Any] = {}
        for name in indices:
            t = params.get(name, buffers.get(name))
            if t is not None and id(t) not in memo:
                memo[id(t)] = (
                    nn.Parameter(torch.empty(0), requires_grad=t.requires_grad)
                    if isinstance(t, nn.Parameter)
                    else torch.empty(0)
                )
        new = copy.deepcopy(model, memo)
    done: set[str] = set()
    for name, dims in indices.items():
        if name in done:
            continue
        is_param = name in params
        orig = params[name] if is_param else buffers[name]
        t = orig.detach()
        changed = False
        for _name, dim, by, rows in (g for g in plan.gathers if g[0] == name):
            t = _gather(t, int(dim), int(by), rows)
            changed = True
        for dim, idx in sorted(dims.items()):
            if idx is not None:
                t = t.index_select(dim, idx.to(t.device))
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
        setattr(new.get_submodule(module_path), attr, int(value))
    if slices:
        install_slices(new, slices)
    for module_path, before, after in plan.norms:
        resize_norm(new, module_path, int(before), int(after))
    for module_path, kind in plan.removed:
        how, _, arity = kind.partition(":")
        parent_path, _, child = module_path.rpartition(".")
        parent = new.get_submodule(parent_path)
        setattr(parent, child, Removed(how, int(arity or 1)))
    _fix_module_attributes(new)
    if plan.lowrank:
        for module_path, rank in plan.lowrank:
            parent_path, _, child = module_path.rpartition(".")
            parent = new.get_submodule(parent_path)
            setattr(parent, child, factorize_module(getattr(parent, child), int(rank)))
    _keep_entries(new, plan.lists)
    sync_config(model, new)  # a transformers config says how many experts are left
    sync_hidden_size(new, plan)  # and how wide its residual stream now is
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
        elif isinstance(module, nn.RNNBase) and module.proj_size == 0:
            # LSTM/GRU/RNN: sizes from the first layer's weights, and the cached weight list
            # (``_flat_weights``) pointed at the sliced parameters, or the module runs the old
            w_ih, w_hh = module.get_parameter("weight_ih_l0"), module.get_parameter("weight_hh_l0")
            module.input_size, module.hidden_size = int(w_ih.shape[1]), int(w_hh.shape[1])
            module._init_flat_weights()
        _fix_head_counts(module)


def _fix_head_counts(module: nn.Module) -> None:
    """BERT-style self-attention (``query``, ``attention_head_size``): its head count and
    total head width follow the pruned query projection, also where its code never reads
    them, so that the pruned model describes itself truthfully."""
    query = getattr(module, "query", None)
    head = vars(module).get("attention_head_size")
    if not isinstance(query, nn.Linear) or isinstance(head, bool) or not isinstance(head, int):
        return
    width = int(query.weight.shape[0])  # the parent comes before its query in modules()
    if head <= 0 or width % head:
        return
    for attr, value in (("num_attention_heads", width // head), ("all_head_size", width)):
        if isinstance(vars(module).get(attr), int):
            setattr(module, attr, value)
