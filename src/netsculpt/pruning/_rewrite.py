"""Literal slice bounds rewritten in a module's code when the channels they cut go.

A model that takes a whole piece of a concatenation with literal bounds
(``torch.cat([b, skip], 1)[:, :64]``) hard-codes the piece's width. No attribute holds the
64, so pruning ``b`` would make the slice read channels of ``skip``. The planner records
the slice instead: ``(module, dim, start, end, new_start, new_end)``, with ``start`` and
``end`` as the module's code writes them. Applying the plan traces that module's own
``forward`` with :mod:`torch.fx` (its sub-modules stay calls), replaces the bounds and binds
the regenerated code to the module as its ``forward``. The code runs with ``self`` as
the module, so later changes to its parameters are seen, ``copy.deepcopy`` rebinds it, and a
reloaded folder replays the rewrite from the plan (the plan is data; no code is stored).
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from netsculpt.errors import PlanError

__all__ = [
    "REWRITES_ATTR",
    "SliceRewrite",
    "current_bounds",
    "install_slices",
    "prepare_slices",
]

SliceRewrite = tuple[str, int, int, int, int, int]
"""``(module, dim, start, end, new_start, new_end)``: bounds as the module's code writes
them, and the bounds of the pruned piece."""

REWRITES_ATTR = "_netsculpt_slices"
"""Set on a rewritten module: ``{(dim, start, end): (new_start, new_end)}``."""


class _OwnCode(fx.Tracer):
    """Traces one module's ``forward`` only: every sub-module stays a call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def current_bounds(module: nn.Module, dim: int, start: int, end: int) -> tuple[int, int]:
    """The bounds a module's code wrote for a slice whose current bounds are ``start:end``.

    A module rewritten by an earlier plan runs bounds that its code does not show; the
    rewrite of a later plan is recorded against the code.
    """
    done = getattr(module, REWRITES_ATTR, None) or {}
    for (d, s, e), (ns, ne) in done.items():
        if d == dim and (ns, ne) == (start, end):
            return s, e
    return start, end


def _bounds(item: Any) -> tuple[int, int | None] | None:
    """``(start, end)`` of a literal slice with step 1 (end None: to the end)."""
    if not isinstance(item, slice) or item.step not in (None, 1):
        return None
    start = 0 if item.start is None else item.start
    end = item.stop
    if not isinstance(start, int) or start < 0 or not (end is None or isinstance(end, int)):
        return None
    return start, end


def _matches(found: tuple[int, int | None] | None, start: int, end: int) -> bool:
    return found is not None and found[0] == start and found[1] in (end, None)


def _slice_nodes(graph: fx.Graph, dim: int, start: int, end: int) -> list[tuple[fx.Node, int]]:
    """Nodes of ``graph`` that slice ``start:end`` along ``dim``: (node, item position).

    ``dim`` counts from the front; the code may count from the back (``narrow(-1, ...)``,
    ``y[..., :16]``), which the tracer cannot resolve without shapes: those match on the
    bounds alone (the verifier runs the rewritten model against the original).
    """
    found: list[tuple[fx.Node, int]] = []
    for node in graph.nodes:
        if node.op in ("call_function", "call_method") and node.target is operator.getitem:
            index = node.args[1]
            items = index if isinstance(index, tuple) else (index,)
            positions = list(range(len(items)))
            if Ellipsis in items:
                cut = items.index(Ellipsis)
                positions = [p for p in positions if p < cut or p > cut]
            for p in positions:
                front = Ellipsis not in items or p < items.index(Ellipsis)
                if (p == dim or not front) and _matches(_bounds(items[p]), start, end):
                    found.append((node, p))
        elif node.target in (torch.narrow, "narrow"):
            args = node.args[1:]
            literal = len(args) >= 3 and all(isinstance(a, int) for a in args[:3])
            if (
                literal
                and args[0] in (dim, *range(-8, 0))
                and (args[1], args[1] + args[2])
                == (
                    start,
                    end,
                )
            ):
                found.append((node, -1))
    return found


def _replace(node: fx.Node, where: int, new_start: int, new_end: int) -> None:
    if where < 0:  # narrow(x, dim, start, length)
        args = list(node.args)
        args[2], args[3] = new_start, new_end - new_start
        node.args = tuple(args)
        return
    index = node.args[1]
    items = list(index if isinstance(index, tuple) else (index,))
    old = items[where]
    items[where] = slice(new_start or None, None if old.stop is None else new_end, None)
    node.args = (node.args[0], tuple(items) if isinstance(index, tuple) else items[0])


Prepared = dict[str, tuple[Callable[..., Any], dict[tuple[int, int, int], tuple[int, int]]]]


def prepare_slices(model: nn.Module, rewrites: Sequence[SliceRewrite]) -> Prepared:
    """Trace and rewrite the code of every module ``rewrites`` name, changing nothing yet.

    Raises :class:`PlanError` naming the module when its code cannot be traced or holds no
    slice with the recorded bounds (a plan made for another model), before the caller has
    changed anything.
    """
    by_module: dict[str, list[SliceRewrite]] = {}
    for entry in rewrites:
        by_module.setdefault(entry[0], []).append(entry)
    prepared: Prepared = {}
    for path, entries in by_module.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise PlanError(
                f"the plan rewrites a slice in module {path!r}, which the model does not "
                f"have; apply a plan to the architecture it was made for"
            ) from None
        done: dict[tuple[int, int, int], tuple[int, int]] = dict(
            getattr(module, REWRITES_ATTR, None) or {}
        )
        for _, dim, start, end, new_start, new_end in entries:
            done[(dim, start, end)] = (new_start, new_end)
        prepared[path] = (_forward(module, path, done), done)
    return prepared


def install_slices(model: nn.Module, prepared: Prepared) -> None:
    """Bind the rewritten code :func:`prepare_slices` made to the modules of ``model``."""
    for path, (forward, done) in prepared.items():
        module = model.get_submodule(path)
        module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
        setattr(module, REWRITES_ATTR, dict(done))


def _forward(
    module: nn.Module, path: str, done: dict[tuple[int, int, int], tuple[int, int]]
) -> Callable[..., Any]:
    name = path or type(module).__name__
    try:
        graph = _OwnCode().trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is reported the same way
        raise PlanError(
            f"the plan rewrites a literal slice in module {name!r}, but its forward cannot be "
            f"traced by torch.fx ({type(exc).__name__}: {str(exc)[:160]}); keep the sliced "
            f"channels whole with PruneConfig(exclude=[{name!r}])"
        ) from None
    for (dim, start, end), (new_start, new_end) in done.items():
        nodes = _slice_nodes(graph, dim, start, end)
        if not nodes:
            raise PlanError(
                f"the plan rewrites the slice {start}:{end} along dim {dim} in module "
                f"{name!r}, whose code has no such slice; apply a plan to the architecture it "
                f"was made for"
            )
        for node, where in nodes:
            _replace(node, where, new_start, new_end)
    graph.lint()
    code = graph.python_code(root_module="self")
    scope: dict[str, Any] = dict(code.globals)
    exec(compile(code.src, f"<netsculpt rewrite of {name}>", "exec"), scope)  # noqa: S102
    forward: Callable[..., Any] = scope["forward"]
    return forward
