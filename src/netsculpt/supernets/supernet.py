"""Elastic super-networks: any model netsculpt can analyse, with nested sub-networks inside.

:func:`elastic` orders the units of every prunable group once by importance and moves them
physically into that order (the model computes exactly what it did), so that every
sub-network keeps a *prefix* of each group: the weights of a smaller sub-network are the
first rows and columns of a larger one's, as in once-for-all and SortedNet. The
:class:`Supernet` runs a chosen sub-network by slicing its weights (views where the kept
positions are contiguous), so a smaller sub-network also runs faster while it trains, and
:meth:`Supernet.extract` returns the ordinary, physically smaller model.

The dependency groups, the plan a sub-network stands for and its attribute updates come
from the pruning engine (:mod:`netsculpt.pruning`): a sub-network is a plan, built from
prefix masks and checked once, on the smallest sub-network, by the engine's verifier.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from netsculpt._checks import check_model
from netsculpt._inputs import ExampleInputs, call_model, output_difference
from netsculpt.errors import InputError, NothingToPruneError, PlanError, UnknownNameError
from netsculpt.graph._arguments import match_names
from netsculpt.graph.analysis import Graph, Group, analyze
from netsculpt.pruning._build import build, in_shape_sites
from netsculpt.pruning._decide import _removed_blocks, _round_keep, granularity
from netsculpt.pruning._per_expert import expert_groups, expert_scores
from netsculpt.pruning._verify import verify
from netsculpt.pruning.apply import _aliases, _fix_module_attributes, apply, plan_of
from netsculpt.pruning.importance import IMPORTANCE, ImportanceContext, criterion_info
from netsculpt.pruning.plan import GroupDecision, Plan
from netsculpt.supernets.config import ElasticConfig
from netsculpt.supernets.space import BLOCK, Arch, Choice, ElasticSpace, arch_key

__all__ = ["Supernet", "elastic", "recalibrate_batchnorm"]

#: sub-network plans kept per super-network (a training run samples far more)
PLAN_CACHE = 512
#: module attributes the slicing sets from the sliced weights, restored afterwards
_SIZE_FIELDS = (
    "out_features",
    "in_features",
    "in_channels",
    "out_channels",
    "num_features",
    "normalized_shape",
    "num_channels",
    "num_embeddings",
    "embedding_dim",
    "num_parameters",
    "nf",
    "nx",
)


def elastic(
    model: nn.Module,
    example_inputs: ExampleInputs,
    config: ElasticConfig | None = None,
    *,
    calib: Sequence[ExampleInputs] | None = None,
    graph: Graph | None = None,
) -> Supernet:
    """Make ``model`` an elastic super-network (``model`` itself is left untouched).

    Args:
        model: any model :func:`netsculpt.analyze` handles, usually trained.
        example_inputs: inputs as the model is called with them.
        config: which groups are elastic and what they may keep (default
            ``ElasticConfig()``: every prunable group at 25, 50, 75 or 100 % of its units).
        calib: calibration batches, for a criterion registered with ``needs_calib``.
        graph: the result of ``ns.analyze(model, example_inputs)``, if already made.

    Raises:
        InputError: a bad config, criterion or widths larger than a group.
        NothingToPruneError: nothing in the model can be elastic under ``config``.
        PlanError: the model's code does not run at the smallest widths.
    """
    check_model(model)
    if config is None:
        config = ElasticConfig()
    elif not isinstance(config, ElasticConfig):
        raise InputError(
            f"ns.elastic takes an ElasticConfig as its third argument, got "
            f"{type(config).__name__}; e.g. ns.elastic(model, inputs, "
            f"ns.ElasticConfig(keep=(0.5, 1.0)))"
        )
    if config.importance not in IMPORTANCE:
        raise UnknownNameError(
            f"ElasticConfig(importance={config.importance!r}) names no registered criterion; "
            f"choose one of {sorted(IMPORTANCE)}"
        )
    if criterion_info(config.importance).needs_calib and not calib:
        raise InputError(
            f"importance {config.importance!r} needs calibration batches: pass "
            f"ns.elastic(..., calib=[batch, ...]) or ElasticConfig(importance='magnitude')"
        )
    if graph is None:
        graph = analyze(
            model,
            example_inputs,
            exclude=list(config.exclude),
            protect_outputs=config.protect_outputs,
        )
    elif not isinstance(graph, Graph):
        raise InputError(f"graph must come from ns.analyze, got {type(graph).__name__}")
    groups = _elastic_groups(graph, config)
    blocks = _elastic_blocks(graph, config)
    if not groups and not blocks:
        raise NothingToPruneError(
            f"nothing in {graph.model_name} can be elastic under {config}: no prunable group "
            f"matches groups={list(config.groups)} and no block is elastic; see "
            f"ns.analyze(model, inputs).summary() for the groups and blocks"
        )
    was_training = model.training
    model.eval()
    try:
        ctx = ImportanceContext(model=model, graph=graph, calib=calib, seed=config.seed)
        score = IMPORTANCE[config.importance]
        orders: dict[str, list[int]] = {}
        # the neurons of stacked expert weights: each expert in its own order, none shared
        expert_orders: dict[str, list[list[int]]] = {}
        experts = expert_groups(model, graph, groups)
        for g in groups:
            n = experts.get(g.uid)
            if n is not None:
                per = expert_scores(score, config.importance, g, n, ctx)
                expert_orders[g.name] = [
                    [int(i) for i in np.argsort(-r, kind="stable")] for r in per
                ]
                orders[g.name] = list(range(g.size))
                continue
            scores = np.asarray(score(g, ctx), dtype=np.float64)
            if scores.shape != (g.size,) or not np.isfinite(scores).all():
                raise InputError(
                    f"importance {config.importance!r} returned {scores.shape} scores for group "
                    f"{g.name!r} of {g.size} units (or non-finite ones); it must return one "
                    f"finite score per unit"
                )
            orders[g.name] = [int(i) for i in np.argsort(-scores, kind="stable")]
        ordered = copy.deepcopy(model)
        permute_units(ordered, graph, groups, orders)
        permute_experts(ordered, graph, groups, expert_orders)
        _check_same_function(model, ordered, example_inputs, graph.model_name)
    finally:
        model.train(was_training)
    supernet = Supernet(ordered, example_inputs, config, graph, orders, blocks, expert_orders)
    return supernet.train(was_training)  # in the mode the model was in


def _elastic_groups(graph: Graph, config: ElasticConfig) -> list[Group]:
    chosen = []
    patterns = [p for p in config.groups if p != "*"]
    every = "*" in config.groups
    for g in graph.prunable_groups:
        if config.exclude and (
            match_names(config.exclude, g.name) or match_names(config.exclude, g.module)
        ):
            continue
        if every or match_names(patterns, g.name) or match_names(patterns, g.module):
            chosen.append(g)
    named = [p for p in patterns if not p.startswith("re:")]
    missing = [
        p for p in named if not any(match_names([p], g.name) or match_names([p], g.module)
                                    for g in graph.prunable_groups)
    ]  # fmt: skip
    if missing:
        some = ", ".join(g.name for g in graph.prunable_groups[:6])
        raise InputError(
            f"ElasticConfig(groups=...) names {missing}, which match no prunable group of "
            f"{graph.model_name}; prunable groups: {some or 'none'}"
        )
    for key in config.widths:
        if not any(match_names([key], g.name) for g in chosen):
            raise InputError(
                f"ElasticConfig(widths={{{key!r}: ...}}) matches no elastic group; elastic "
                f"groups: {', '.join(g.name for g in chosen[:6]) or 'none'}"
            )
    return chosen


def _elastic_blocks(graph: Graph, config: ElasticConfig) -> list[str]:
    if config.depth is False:
        return []
    if config.depth is True:
        return list(graph.blocks)
    names = list(config.depth)  # type: ignore[arg-type]
    blocks = [b for b in graph.blocks if match_names(names, b)]
    missing = [n for n in names if not any(match_names([n], b) for b in graph.blocks)]
    if missing:
        some = ", ".join(graph.blocks[:6]) or "none"
        raise InputError(
            f"ElasticConfig(depth=...) names {missing}, which are not removable blocks of "
            f"{graph.model_name} (removing them would change a shape, or they are not "
            f"blocks); removable blocks: {some}{', ...' if len(graph.blocks) > 6 else ''}"
        )
    return blocks


def _widths_of(group: Group, config: ElasticConfig) -> tuple[int, ...]:
    explicit = next(
        (counts for key, counts in config.widths.items() if match_names([key], group.name)),
        None,
    )
    if explicit is not None:
        too_wide = [n for n in explicit if n > group.size]
        if too_wide:
            raise InputError(
                f"ElasticConfig(widths=...) offers {too_wide} units for group {group.name!r}, "
                f"which has only {group.size}; offer widths up to {group.size}"
            )
        return tuple(sorted({*explicit, group.size}))
    m = granularity(group, config.round_to)
    widths = {_round_keep(max(1, round(f * group.size)), group.size, m) for f in config.keep}
    return tuple(sorted(widths | {group.size}))


# --------------------------------------------------------------------------- ordering


def permute_units(
    model: nn.Module, graph: Graph, groups: Sequence[Group], orders: Mapping[str, Sequence[int]]
) -> dict[tuple[str, int], np.ndarray]:
    """Move the units of every group of ``groups`` into ``orders`` (new unit ``j`` is old
    unit ``orders[name][j]``), in place, in every tensor dimension the group reaches.

    The model computes what it computed before: the graph couples exactly the dimensions a
    unit lives in, as it does for pruning. Returns, per (tensor, dimension) moved, the
    source position of every new position.
    """
    sources = unit_sources(graph, groups, orders)
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    done: set[tuple[int, int]] = set()
    with torch.no_grad():
        for (name, dim), src in sources.items():
            t = tensors[name]
            if (id(t), dim) in done:
                continue
            done.add((id(t), dim))
            t.data = t.data.index_select(dim, torch.as_tensor(src, device=t.device))
    return sources


def permute_experts(
    model: nn.Module,
    graph: Graph,
    groups: Sequence[Group],
    expert_orders: Mapping[str, Sequence[Sequence[int]]],
) -> None:
    """Move the neurons of each expert of the groups in ``expert_orders`` (stacked
    ``[experts, ...]`` weights) into that expert's own order, in place."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for (name, dim), src in expert_sources(graph, groups, expert_orders).items():
            t = tensors[name]
            rows = [
                t.data[e].index_select(dim - 1, torch.as_tensor(r, device=t.device))
                for e, r in enumerate(src)
            ]
            t.data = torch.stack(rows)


def expert_sources(
    graph: Graph, groups: Sequence[Group], expert_orders: Mapping[str, Sequence[Sequence[int]]]
) -> dict[tuple[str, int], np.ndarray]:
    """Per (tensor, dimension) of those groups, ``[experts, positions]``: the source
    position of every position of each expert once its neurons are in its own order."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for g in groups:
        rows = expert_orders.get(g.name)
        if rows is None:
            continue
        for slot in g.slots:
            _leaf, arr = graph.index_map(slot.tensor, slot.dim)[g.uid]
            identity = np.arange(arr.shape[0], dtype=np.int64)
            per = [_source_positions([(np.asarray(r, dtype=np.int64), arr)]) for r in rows]
            out[(slot.tensor, slot.dim)] = np.stack([identity if p is None else p for p in per])
    return out


def _source_positions(relevant: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """Per position of one dimension, where its new content comes from."""
    units = np.stack([arr for _order, arr in relevant])  # (groups, positions)
    n = units.shape[1]
    rank = np.zeros(n, dtype=np.int64)
    where: dict[tuple[tuple[int, ...], int], int] = {}
    seen: dict[tuple[int, ...], int] = {}
    keys = [tuple(int(u) for u in units[:, p]) for p in range(n)]
    for p, key in enumerate(keys):
        r = seen.get(key, 0)
        seen[key] = r + 1
        rank[p] = r
        where[(key, r)] = p
    src = np.arange(n, dtype=np.int64)
    for p, key in enumerate(keys):
        wanted = tuple(
            int(order[u]) if u >= 0 else -1 for (order, _arr), u in zip(relevant, key, strict=True)
        )
        src[p] = where[(wanted, int(rank[p]))]
    return None if (src == np.arange(n)).all() else src


def _check_same_function(
    model: nn.Module, ordered: nn.Module, example_inputs: ExampleInputs, name: str
) -> None:
    diff = output_difference(model, ordered, example_inputs)
    if diff is not None:
        raise PlanError(
            f"reordering the units of {name} by importance changed its outputs (max "
            f"difference {diff:.3g}); its code uses channel positions netsculpt does not "
            f"see: exclude the module involved with ElasticConfig(exclude=[...]) and "
            f"report the model to netsculpt"
        )


# --------------------------------------------------------------------------- the module


class Supernet(nn.Module):
    """A model whose nested sub-networks run by slicing its weights.

    Made by :func:`netsculpt.elastic`. ``supernet(*inputs)`` runs the active sub-network
    (:meth:`set_arch`, or ``with supernet.use(arch):``; the largest by default). A
    sub-network is a plain dict (:attr:`space` lists the choices); :meth:`extract` returns
    it as an ordinary smaller model.

    Attributes:
        model: the model with its units in importance order (it computes what the
            original did).
        space: the choices (:class:`~netsculpt.supernets.space.ElasticSpace`).
        config: the :class:`~netsculpt.supernets.config.ElasticConfig` it was made with.
        orders: per elastic group, the original unit at each position.
        expert_orders: per elastic group of stacked expert neurons, each expert's own
            order (its ``orders`` entry is then the identity).
        graph: the analysis the plans are built from.
        fixed: groups left at full width because the model's code needs their size, with
            the reason.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: ExampleInputs,
        config: ElasticConfig,
        graph: Graph,
        orders: Mapping[str, Sequence[int]],
        blocks: Sequence[str],
        expert_orders: Mapping[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.graph = graph
        self.orders = {k: list(v) for k, v in orders.items()}
        self.expert_orders = {k: [list(r) for r in v] for k, v in (expert_orders or {}).items()}
        self.example_inputs = example_inputs
        self.fixed: dict[str, str] = {}
        self._groups = [g for g in graph.prunable_groups if g.name in self.orders]
        self._sources: dict[tuple[str, int], np.ndarray] | None = None
        self._expert_sources: dict[tuple[str, int], np.ndarray] | None = None
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._index: dict[tuple[int, ...], torch.Tensor] = {}
        self._needed: set[tuple[str, str]] = set()
        self._removed_kind = self._standins(blocks)
        self._build_space()
        self._settle(full_depth=True)
        self._check_branch_widths()
        self._settle(full_depth=False)
        self.active: Arch = self.space.largest()

    # ---------------------------------------------------------------- the space

    def _standins(self, blocks: Sequence[str]) -> dict[str, str]:
        """Per elastic block, how it is removed (``"zeros:2"``, ...). With ``depth=True``,
        a block nothing can stand in for (it returns neither a tensor nor a tuple of them)
        stays, listed in :attr:`fixed`; a block named in the config raises."""
        kinds: dict[str, str] = {}
        for block in blocks:
            try:
                kinds.update(_removed_blocks(self.model, self.example_inputs, self.graph, [block]))
            except InputError:
                if self.config.depth is not True:
                    raise
                self.fixed[BLOCK + block] = "returns neither a tensor nor a tuple of tensors"
        return kinds

    def _check_branch_widths(self) -> None:
        """A dropped block is replaced by its input (a whole block) or by zeros shaped like
        its input (a residual branch), which is right only when its input and output widths
        agree in every sub-network. Each width choice is shrunk alone, once: a block whose
        input and output then differ depends on another group at its output than at its
        input, and cannot be dropped (with ``depth=True`` it stays, listed in
        :attr:`fixed`; named in ``depth=...`` it is refused)."""
        blocks = list(self._removed_kind)
        if not blocks:
            return
        same: dict[str, bool] = dict.fromkeys(blocks, True)
        hooks = []
        for block in blocks:

            def hook(module: nn.Module, args: Any, output: Any, block: str = block) -> None:
                first = next((a for a in args if isinstance(a, torch.Tensor)), None)
                out = output[0] if isinstance(output, tuple) else output
                if isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor):
                    same[block] = same[block] and first.shape == out.shape

            hooks.append(self.model.get_submodule(block).register_forward_hook(hook))
        try:
            for choice in self.space:
                if choice.kind != "width":
                    continue
                arch = {**self.space.largest(), choice.name: choice.smallest}
                with torch.no_grad(), self._sliced(self.plan(arch)):
                    call_model(self.model, self.example_inputs)
        finally:
            for h in hooks:
                h.remove()
        bad = [b for b, ok in same.items() if not ok]
        if not bad:
            return
        if self.config.depth is not True:
            raise InputError(
                f"ElasticConfig(depth=...) lets {bad} be dropped, but in smaller sub-networks "
                f"their input and output widths differ, so removing them would change a "
                f"shape; drop the whole block around them instead (see graph.blocks)"
            )
        for block in bad:
            del self._removed_kind[block]
            self.fixed[BLOCK + block] = "its input and output widths differ in sub-networks"
        self._plans.clear()
        self._build_space()

    def _build_space(self) -> None:
        choices: list[Choice] = []
        for g in self._groups:
            if g.name in self.fixed:
                continue
            widths = _widths_of(g, self.config)
            if len(widths) > 1:
                choices.append(Choice(g.name, "width", widths, g.unit_width))
        for block in self._removed_kind:
            choices.append(Choice(BLOCK + block, "depth", (False, True)))
        self.space = ElasticSpace(tuple(choices))

    def _settle(self, *, full_depth: bool) -> None:
        """Check the smallest sub-network with the engine's verifier, at full depth or with
        every elastic block dropped; learn which size attributes the model's code needs,
        and fix the groups whose size it hard-codes."""
        for _attempt in range(3):
            arch = self.space.smallest()
            if full_depth:
                arch.update({c.name: True for c in self.space if c.kind == "depth"})
            error = self._verify(arch)
            if error is None:
                return
            whole = error or in_shape_sites(self.graph, self._keep(arch))
            names = {g.name for g in self._groups if g.uid in whole and g.name in self.space}
            if not names:
                break
            for name in names:
                self.fixed[name] = "the model's code uses its size as a literal"
            self._plans.clear()
            self._build_space()
        raise PlanError(
            f"the smallest sub-network of {self.graph.model_name} does not run like the "
            f"original with the removed units zeroed; exclude the module whose code hard-codes "
            f"a size with ElasticConfig(exclude=[...]), or offer fewer widths"
        )

    def _verify(self, arch: Arch) -> set[int] | None:
        """None when ``arch`` runs as the original with the removed units zeroed; else the
        groups its code hard-codes the size of (possibly none found)."""
        keep = self._keep(arch)
        built = build(self.model, self.graph, self._groups, keep, self._removed(arch), {})
        if built.plan.is_identity:
            return None
        outcome = verify(
            self.model,
            self.example_inputs,
            self.graph,
            keep,
            built.plan,
            shape_attrs=built.shape_attrs,
        )
        if not outcome.ok:
            return set(built.unresolved)
        group_attrs = {(m, a) for m, a, _v in built.plan.attrs}
        self._needed |= {(m, a) for m, a, _v in outcome.plan.attrs} - group_attrs
        return None

    def largest(self) -> Arch:
        """The full model."""
        return self.space.largest()

    def smallest(self) -> Arch:
        """Every elastic group at its smallest width, every elastic block dropped."""
        return self.space.smallest()

    def sample(self, rng: Any = None) -> Arch:
        """A sub-network drawn uniformly (``rng``: ``random.Random``, numpy Generator, seed)."""
        return self.space.sample(rng)

    # ---------------------------------------------------------------- plans

    def _keep(self, arch: Mapping[str, Any]) -> dict[int, np.ndarray]:
        keep = {}
        for g in self._groups:
            mask = np.zeros(g.size, dtype=bool)
            mask[: int(arch.get(g.name, g.size))] = True
            keep[g.uid] = mask
        return keep

    def _removed(self, arch: Mapping[str, Any]) -> list[tuple[str, str]]:
        dropped = [b for b in self._removed_kind if arch.get(BLOCK + b, True) is False]
        # a block inside a dropped block goes with it
        outer = [b for b in dropped if not any(b.startswith(o + ".") for o in dropped)]
        return [(b, self._removed_kind[b]) for b in outer]

    def plan(self, arch: Mapping[str, Any]) -> Plan:
        """The plan of sub-network ``arch`` against :attr:`model` (units in importance
        order); :meth:`extract` records the equivalent plan against the original model."""
        arch = self.space.check(arch)
        key = arch_key(arch)
        cached = self._plans.get(key)
        if cached is not None:
            self._plans.move_to_end(key)
            return cached
        built = build(
            self.model, self.graph, self._groups, self._keep(arch), self._removed(arch), {}
        )
        attrs = built.plan.attrs + tuple(
            a for a in built.shape_attrs if (a[0], a[1]) in self._needed
        )
        plan = Plan(
            tensors=built.plan.tensors,
            shapes=built.plan.shapes,
            attrs=attrs,
            groups=built.plan.groups,
            removed=built.plan.removed,
            meta={"elastic": {"arch": arch}},
        )
        self._plans[key] = plan
        if len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

    # ---------------------------------------------------------------- running

    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Make ``arch`` the sub-network ``forward`` runs."""
        self.active = self.space.check(arch)

    @contextlib.contextmanager
    def use(self, arch: Mapping[str, Any]) -> Iterator[Supernet]:
        """Run ``arch`` inside the ``with`` block, then the previous sub-network again."""
        previous = self.active
        self.set_arch(arch)
        try:
            yield self
        finally:
            self.active = previous

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        plan = self.plan(self.active)
        if plan.is_identity:
            return self.model(*args, **kwargs)
        with self._sliced(plan):
            return self.model(*args, **kwargs)

    def _positions(self, idx: tuple[int, ...], device: torch.device) -> torch.Tensor:
        t = self._index.get(idx)
        if t is None:
            t = self._index[idx] = torch.as_tensor(idx, dtype=torch.long)
        return t.to(device)

    @contextlib.contextmanager
    def _sliced(self, plan: Plan) -> Iterator[None]:
        """Swap the sliced weights, size attributes and removed blocks in, then back."""
        model = self.model
        params = dict(model.named_parameters(remove_duplicate=False))
        buffers = dict(model.named_buffers(remove_duplicate=False))
        places = {**_aliases(model, buffers=True), **_aliases(model, buffers=False)}
        undo: list[Any] = []
        touched: dict[int, nn.Module] = {}
        try:
            for name, dims in plan.tensors.items():
                is_param = name in params
                t = params[name] if is_param else buffers[name]
                for dim, idx in sorted(dims.items()):
                    if idx[-1] - idx[0] + 1 == len(idx):
                        t = t.narrow(dim, idx[0], len(idx))
                    else:
                        t = t.index_select(dim, self._positions(tuple(idx), t.device))
                if not is_param:
                    t = t.clone()  # batch norm statistics: never written through a view
                for module_path, attr in places[name]:
                    module = model.get_submodule(module_path)
                    table = module._parameters if is_param else module._buffers
                    undo.append((table, attr, table[attr]))
                    table[attr] = t  # type: ignore[assignment]
                    if id(module) not in touched:
                        touched[id(module)] = module
                        saved = {k: vars(module)[k] for k in _SIZE_FIELDS if k in vars(module)}
                        undo.append((module, saved))
            for module in touched.values():
                _fix_module_attributes(module)
            for module_path, attr, value in plan.attrs:
                module = model.get_submodule(module_path)
                undo.append((module, {attr: getattr(module, attr)}))
                setattr(module, attr, int(value))
            from netsculpt.pruning.apply import Removed

            for module_path, kind in plan.removed:
                how, _, arity = kind.partition(":")
                parent_path, _, child = module_path.rpartition(".")
                parent = model.get_submodule(parent_path)
                undo.append((parent._modules, child, parent._modules[child]))
                parent._modules[child] = Removed(how, int(arity or 1))
            yield
        finally:
            for entry in reversed(undo):
                if len(entry) == 3:
                    table, key, value = entry
                    table[key] = value
                else:
                    module, saved = entry
                    for key, value in saved.items():
                        setattr(module, key, value)

    # ---------------------------------------------------------------- extraction

    def _position_sources(
        self,
    ) -> tuple[dict[tuple[str, int], np.ndarray], dict[tuple[str, int], np.ndarray]]:
        """Where each position of the ordered model comes from in the original: per
        (tensor, dimension), and per (tensor, dimension) and expert; computed once."""
        if self._sources is None or self._expert_sources is None:
            self._sources = unit_sources(self.graph, self._groups, self.orders)
            self._expert_sources = expert_sources(self.graph, self._groups, self.expert_orders)
        return self._sources, self._expert_sources

    def original_plan(self, arch: Mapping[str, Any]) -> Plan:
        """The plan of ``arch`` against the original model (its own unit numbering)."""
        arch = self.space.check(arch)
        plan = self.plan(arch)
        sources, per_expert = self._position_sources()
        tensors: dict[str, dict[int, tuple[int, ...]]] = {}
        gathers = []
        for name, dims in plan.tensors.items():
            tensors[name] = {}
            for dim, idx in dims.items():
                rows = per_expert.get((name, dim))
                if rows is not None:  # each expert kept a prefix of its own order
                    kept_rows = tuple(tuple(int(i) for i in np.sort(r[list(idx)])) for r in rows)
                    gathers.append((name, dim, 0, kept_rows))
                    continue
                src = sources.get((name, dim))
                kept = np.asarray(idx) if src is None else src[np.asarray(idx)]
                tensors[name][dim] = tuple(int(i) for i in np.sort(kept))
        groups = []
        for decision in plan.groups:
            order = self.orders.get(decision.name)
            kept = decision.kept if order is None else sorted(order[: len(decision.kept)])
            groups.append(GroupDecision(decision.name, decision.kind, decision.size, tuple(kept)))
        meta = {
            "elastic": {"arch": arch, "config": self.config.to_dict()},
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
        }
        return Plan(
            tensors={name: dims for name, dims in tensors.items() if dims},
            shapes=plan.shapes,
            attrs=plan.attrs,
            groups=tuple(groups),
            removed=plan.removed,
            meta=meta,
            gathers=tuple(gathers),
        )

    def extract(
        self, arch: Mapping[str, Any], *, calib: Sequence[ExampleInputs] | None = None
    ) -> nn.Module:
        """Sub-network ``arch`` as an ordinary, physically smaller model (no wrapper, no
        masks), in eval mode; ``ns.save``, ``ns.measure`` and ``ns.export_onnx`` take it
        as any pruned model, and its plan (``ns.plan_of``) is against the original model.

        ``calib``: batches to recompute its batch-norm statistics on (each sub-network's
        activations have their own statistics); without them the shared ones are kept.
        """
        small = apply(self.model, self.plan(arch))
        setattr(small, "_netsculpt_plan", self.original_plan(arch))  # noqa: B010
        if calib:
            recalibrate_batchnorm(small, calib)
        return small.eval()

    def describe(self, arch: Mapping[str, Any] | None = None) -> str:
        """One line per choice: its value in ``arch`` (default: the active one) and options."""
        arch = self.space.check(self.active if arch is None else arch)
        lines = [f"{type(self.model).__name__} super-network: {self.space!r}"]
        for c in self.space:
            lines.append(f"  {c.name:<40} {arch[c.name]!s:>6}  of {list(c.options)}")
        for name, why in self.fixed.items():
            lines.append(f"  {name:<40} fixed: {why}")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"space={self.space!r}, active={json.dumps(self.active)[:120]}"


def unit_sources(
    graph: Graph, groups: Sequence[Group], orders: Mapping[str, Sequence[int]]
) -> dict[tuple[str, int], np.ndarray]:
    """Per (tensor, dimension) the groups reach, the source position of every position once
    their units are in ``orders`` (dimensions that do not move are left out)."""
    by_uid = {g.uid: np.asarray(orders[g.name], dtype=np.int64) for g in groups}
    out: dict[tuple[str, int], np.ndarray] = {}
    for tensor, dim in graph.slot_spaces:
        imap = graph.index_map(tensor, dim)
        relevant = [(by_uid[uid], arr) for uid, (_leaf, arr) in imap.items() if uid in by_uid]
        if relevant:
            src = _source_positions(relevant)
            if src is not None:
                out[(tensor, dim)] = src
    return out


def recalibrate_batchnorm(model: nn.Module, batches: Sequence[ExampleInputs]) -> int:
    """Recompute every batch-norm layer's running statistics of ``model`` over ``batches``
    (a cumulative average, as once-for-all and BigNAS do per sub-network). Returns how many
    layers were recomputed; a model without batch norm is left as it is."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                call_model(model, batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def plan_arch(model: nn.Module) -> Arch | None:
    """The sub-network an extracted model was sliced as (None for other models)."""
    plan = plan_of(model)
    found = plan.meta.get("elastic") if plan is not None else None
    return dict(found["arch"]) if isinstance(found, Mapping) and "arch" in found else None
