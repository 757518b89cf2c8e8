"""``ns.Plan``: a frozen, JSON-serialisable description of what to cut.

A plan names, for every parameter and buffer it changes, the indices kept along each
dimension; the module attributes that must follow (a grouped convolution's ``groups``,
an attention module's split size); and, for people, the decision per group. It holds no
module objects and no pickles, so it can be written down, searched over, diffed and
replayed on a freshly built model by :func:`netsculpt.apply`.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from netsculpt.errors import NetsculptError, PlanError

if TYPE_CHECKING:
    from netsculpt.pruning.config import PruneConfig

FORMAT = "netsculpt.plan/1"

__all__ = ["GroupDecision", "Plan", "check_plan_data", "is_size_attribute", "parse_json"]

#: the largest JSON text netsculpt reads (a plan, a manifest)
MAX_JSON_BYTES = 64 * 2**20
#: the deepest nesting of arrays and objects netsculpt reads
MAX_JSON_DEPTH = 256
#: the largest rank a planned tensor may have
MAX_RANK = 16
#: the most outputs a removed module's stand-in may return (``"zeros:3"``)
MAX_ARITY = 64
#: the largest size a plan may declare for one dimension or group
MAX_DIM = 2**40
#: kept indices a plan may hold in all, when it is read without the model's shapes
MAX_INDICES = 2**25

# The attribute updates a plan may carry are the ones the planner writes
# (netsculpt.pruning._build, which reads these two patterns): a grouped layer's ``groups`` /
# ``num_groups``, and integer size attributes whose names look like sizes.
SIZE_ATTRIBUTE = re.compile(
    r"(head|size|dim|num|width|channel|feature|embed|split|inner|hidden)", re.IGNORECASE
)
NOT_SIZE_ATTRIBUTE = re.compile(
    r"(idx|index|layer_id|layer_num|seed|vocab|max_position|position)", re.IGNORECASE
)
GROUP_ATTRIBUTES = frozenset({"groups", "num_groups"})
_DIM_KEY = re.compile(r"0|[1-9][0-9]{0,3}")
_PLAN_KEYS = frozenset(
    {
        "format",
        "meta",
        "tensors",
        "shapes",
        "attrs",
        "groups",
        "removed",
        "lowrank",
        "norms",
        "slices",
        "precision",
        "quantize",
        "lists",
        "gathers",
    }
)
#: entries a ``nn.ModuleList`` may hold for a plan to keep some of them
MAX_ENTRIES = 2**16
#: the precisions a plan may give a layer (``ns.quantize`` quantizes or keeps it float)
PRECISIONS = ("int8", "float")
#: the precision entry that covers every layer no other entry names
EVERY_LAYER = "*"
REMOVED_KINDS = ("zeros", "identity")


def is_size_attribute(name: Any) -> bool:
    """Whether a plan may set module attribute ``name``: a size the planner itself writes.

    Plain public identifiers only: never a dunder, ``forward``, ``training`` or anything
    that does not name a size (the value set is also checked against the module when the
    plan is applied: it must replace an ``int`` the module already holds).
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        return False
    if name.startswith("_"):
        return False
    if name in GROUP_ATTRIBUTES:
        return True
    return bool(SIZE_ATTRIBUTE.search(name)) and not NOT_SIZE_ATTRIBUTE.search(name)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(where: str, problem: str) -> PlanError:
    return PlanError(
        f"plan field {where}: {problem}; the plan file is damaged or was not written by "
        f"netsculpt: write it again with Plan.to_json (or netsculpt.save)"
    )


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise _fail(where, f"expected an integer, got {_short(value)} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise _fail(where, f"{_short(value)} is outside [{lo}, {hi}]")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {_short(value)} ({type(value).__name__})")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {_short(value)} ({type(value).__name__})")
    return value


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {_short(value)} ({type(value).__name__})")
    return value


def _runs_length(runs: Any, where: str, size: int) -> int:
    """How many indices ``[start, stop)`` runs hold, checked without expanding them."""
    runs = _list(runs, where)
    if len(runs) > size:
        raise _fail(where, f"{len(runs)} index runs for a dimension of size {size}")
    total = 0
    previous_stop = 0
    for k, run in enumerate(runs):
        here = f"{where}[{k}]"
        if not isinstance(run, list) or len(run) != 2:
            raise _fail(here, f"expected a [start, stop) pair, got {_short(run)}")
        start = _int(run[0], here + "[0]", 0, max(size - 1, 0))
        stop = _int(run[1], here + "[1]", start + 1, size)
        if start < previous_stop:
            raise _fail(
                here,
                f"run [{start}, {stop}) overlaps or precedes the one before it (indices must "
                f"be unique and sorted ascending)",
            )
        total += stop - start
        previous_stop = stop
    return total


def _removed_kind(kind: Any, where: str) -> tuple[str, int]:
    how, sep, arity = _str(kind, where).partition(":")
    if how not in REMOVED_KINDS:
        raise _fail(where, f"unknown kind {_short(how)} (expected one of {REMOVED_KINDS})")
    if not sep:
        return how, 1
    if not re.fullmatch(r"[1-9][0-9]{0,2}", arity) or int(arity) > MAX_ARITY:
        raise _fail(where, f"arity {_short(arity)} is not an integer in [1, {MAX_ARITY}]")
    return how, int(arity)


def check_plan_data(
    data: Any,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    limit: int | None = MAX_INDICES,
) -> dict[str, tuple[int, ...]]:
    """Check plan data (as read from JSON) without expanding any index list.

    Every field has its JSON type; indices are integers, unique, sorted, within their
    dimension; ranks, arities and sizes are bounded; attribute updates only name sizes
    (:func:`is_size_attribute`). With ``shapes`` (the actual tensor shapes of the model the
    plan will be applied to) the plan's shapes must equal the model's, so no index list can
    be longer than the tensor it slices; without them the plan's kept indices are bounded
    by ``limit`` in all (None: no bound, for a check that expands nothing and is followed
    by one with the model's shapes).

    Returns the plan's shapes. Raises :class:`PlanError` naming the field.
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise PlanError(
            f"not a netsculpt plan (format {_short(found)}, expected {FORMAT!r}); pass the "
            f"plan.json written by netsculpt.save or Plan.to_json"
        )
    unknown = sorted(str(k) for k in data if k not in _PLAN_KEYS)
    if unknown:
        raise _fail(_short(unknown[0]), "is not a field of a netsculpt plan")
    for required in ("tensors", "shapes"):
        if required not in data:
            raise _fail(required, "is missing")
    declared: dict[str, tuple[int, ...]] = {}
    for name, shape in _dict(data["shapes"], "shapes").items():
        where = f"shapes[{_short(name)}]"
        shape = _list(shape, where)
        if len(shape) > MAX_RANK:
            raise _fail(where, f"rank {len(shape)} is above {MAX_RANK}")
        declared[name] = tuple(_int(s, f"{where}[{i}]", 0, MAX_DIM) for i, s in enumerate(shape))
        if shapes is not None:
            actual = shapes.get(name)
            if actual is None:
                raise PlanError(
                    f"the plan changes {name!r}, which the model does not have; apply a plan "
                    f"to the same architecture it was made for"
                )
            if tuple(actual) != declared[name]:
                raise PlanError(
                    f"the plan expects {name!r} of shape {declared[name]}, the model has "
                    f"{tuple(actual)}; apply the plan to an unpruned model of the architecture "
                    f"it was made for"
                )
    total = 0
    for name, dims in _dict(data["tensors"], "tensors").items():
        where = f"tensors[{_short(name)}]"
        if name not in declared:
            raise _fail(where, "names a tensor without its original shape in 'shapes'")
        shape = declared[name]
        for dim, runs in _dict(dims, where).items():
            if not isinstance(dim, str) or not _DIM_KEY.fullmatch(dim):
                raise _fail(
                    f"{where}[{_short(dim)}]", "a dimension must be written as '0', '1', ..."
                )
            if int(dim) >= len(shape):
                raise _fail(
                    f"{where}[{dim!r}]",
                    f"dimension {dim} is past the rank {len(shape)} of {name!r} (shape {shape})",
                )
            total += _runs_length(runs, f"{where}[{dim!r}]", shape[int(dim)])
    biggest = max((s for shape in (shapes or {}).values() for s in shape), default=MAX_DIM)
    groups = _list(data.get("groups", []), "groups")
    for k, group in enumerate(groups):
        where = f"groups[{k}]"
        group = _dict(group, where)
        for key in ("name", "kind"):
            _str(group.get(key), f"{where}.{key}")
        size = _int(group.get("size"), f"{where}.size", 0, biggest)
        total += _runs_length(group.get("kept"), f"{where}.kept", size)
    total += _check_gathers(data.get("gathers", []), declared, data["tensors"])
    if shapes is None and limit is not None and total > limit:
        raise _fail(
            "tensors", f"{total} kept indices in all, more than the {limit} a plan may hold"
        )
    for k, item in enumerate(_list(data.get("attrs", []), "attrs")):
        where = f"attrs[{k}]"
        if not isinstance(item, list) or len(item) != 3:
            raise _fail(where, f"expected [module, attribute, value], got {_short(item)}")
        _str(item[0], where + "[0]")
        attr = _str(item[1], where + "[1]")
        if not is_size_attribute(attr):
            raise _fail(
                where + "[1]",
                f"attribute {_short(attr)} is not a size attribute a plan may set (plans only "
                f"update groups, num_groups and integer sizes such as num_heads or split_size)",
            )
        _int(item[2], where + "[2]", 0, MAX_DIM)
    for k, item in enumerate(_list(data.get("removed", []), "removed")):
        where = f"removed[{k}]"
        if not isinstance(item, list) or len(item) != 2:
            raise _fail(where, f"expected [module, kind], got {_short(item)}")
        if not _str(item[0], where + "[0]"):
            raise _fail(where + "[0]", "the whole model cannot be removed")
        _removed_kind(item[1], where + "[1]")
    for where, item in _entries(data.get("lowrank", []), "lowrank", "[module, rank]"):
        _int(item[1], where + "[1]", 1, MAX_DIM)
    _check_norms(data.get("norms", []))
    _check_slices(data.get("slices", []))
    _check_precision(data.get("precision", []), data.get("quantize"))
    _check_lists(data.get("lists", []))
    meta = _dict(data.get("meta", {}), "meta")
    _check_stored_configs(meta)
    return declared


def _entries(items: Any, field: str, layout: str) -> Iterator[tuple[str, list[Any]]]:
    """Each ``[module, ...]`` entry of the plan field ``field`` (laid out as ``layout``),
    with its place for messages; a module may be named once and never be empty."""
    size = layout.count(",") + 1
    seen: set[str] = set()
    for k, item in enumerate(_list(items, field)):
        where = f"{field}[{k}]"
        if not isinstance(item, list) or len(item) != size:
            raise _fail(where, f"expected {layout}, got {_short(item)}")
        module = _str(item[0], where + "[0]")
        if not module or module in seen:
            raise _fail(where + "[0]", f"module {_short(module)} is empty or listed twice")
        seen.add(module)
        yield where, item


def _check_norms(norms: Any) -> None:
    """``[[module, width before, width after], ...]``: norms over a pruned residual width."""
    for where, item in _entries(norms, "norms", "[module, width before, width after]"):
        before = _int(item[1], where + "[1]", 1, MAX_DIM)
        _int(item[2], where + "[2]", 1, before)


def _check_precision(precision: Any, quantize: Any) -> None:
    """``[[module, "int8" | "float"], ...]`` and the ``QuantizeConfig`` fields as data."""
    from netsculpt.quantization.config import QuantizeConfig

    for where, item in _entries(precision, "precision", "[module, precision]"):
        if item[1] not in PRECISIONS:
            raise _fail(
                where + "[1]", f"precision {_short(item[1])} is not one of {list(PRECISIONS)}"
            )
    if quantize is not None:
        fields = _dict(quantize, "quantize")
        try:
            QuantizeConfig.from_dict(fields)
        except NetsculptError as exc:
            raise _fail("quantize", str(exc)) from None


def _check_gathers(
    gathers: Any, declared: Mapping[str, tuple[int, ...]], tensors: Mapping[str, Any]
) -> int:
    """``[[tensor, dim, by, [kept runs per index of by], ...], ...]``: positions kept along
    ``dim`` chosen separately for each index along ``by`` (each expert of stacked expert
    weights), the same number for each. Returns how many indices they hold."""
    total = 0
    seen: set[tuple[str, int]] = set()
    for k, item in enumerate(_list(gathers, "gathers")):
        where = f"gathers[{k}]"
        if not isinstance(item, list) or len(item) != 4:
            raise _fail(where, f"expected [tensor, dim, by, kept per index], got {_short(item)}")
        name = _str(item[0], where + "[0]")
        shape = declared.get(name)
        if shape is None:
            raise _fail(where + "[0]", "names a tensor without its original shape in 'shapes'")
        dim = _int(item[1], where + "[1]", 0, len(shape) - 1)
        by = _int(item[2], where + "[2]", 0, len(shape) - 1)
        if by == dim or (name, dim) in seen:
            raise _fail(
                where, f"gathers {name!r} along dimension {dim} by {by} (twice, or by itself)"
            )
        seen.add((name, dim))
        if str(dim) in _dict(tensors.get(name, {}), f"tensors[{_short(name)}]"):
            raise _fail(where, f"{name!r} is sliced along dimension {dim} in 'tensors' too")
        rows = _list(item[3], where + "[3]")
        if len(rows) != shape[by]:
            raise _fail(
                where + "[3]",
                f"{len(rows)} lists of kept indices for the {shape[by]} along dimension {by}",
            )
        counts = {_runs_length(r, f"{where}[3][{e}]", shape[dim]) for e, r in enumerate(rows)}
        if len(counts) > 1 or 0 in counts:
            raise _fail(where + "[3]", "each index must keep the same number (at least one)")
        total += sum(counts) * len(rows)
    return total


def _check_lists(lists: Any) -> None:
    """``[[module list, entries before, kept runs], ...]``: entries of a ``ModuleList`` kept
    (whole experts removed); at least one entry stays."""
    for where, item in _entries(lists, "lists", "[module list, entries, kept]"):
        size = _int(item[1], where + "[1]", 1, MAX_ENTRIES)
        if _runs_length(item[2], where + "[2]", size) < 1:
            raise _fail(where + "[2]", "a module list must keep at least one entry")


def _check_slices(slices: Any) -> None:
    """``[[module, dim, start, end, new start, new end], ...]``: literal slices rewritten."""
    seen: set[tuple[str, int, int, int]] = set()
    for k, item in enumerate(_list(slices, "slices")):
        where = f"slices[{k}]"
        if not isinstance(item, list) or len(item) != 6:
            raise _fail(
                where,
                f"expected [module, dim, start, end, new start, new end], got {_short(item)}",
            )
        module = _str(item[0], where + "[0]")
        dim = _int(item[1], where + "[1]", 0, MAX_RANK - 1)
        start = _int(item[2], where + "[2]", 0, MAX_DIM - 1)
        end = _int(item[3], where + "[3]", start + 1, MAX_DIM)
        new_start = _int(item[4], where + "[4]", 0, start)
        _int(item[5], where + "[5]", new_start + 1, new_start + end - start)
        if (module, dim, start, end) in seen:
            raise _fail(where, f"slice {start}:{end} of module {_short(module)} listed twice")
        seen.add((module, dim, start, end))


def _check_stored_configs(meta: Mapping[str, Any]) -> None:
    """The pruning configs a plan records (its own, and each step's when composed) are
    checked as data: the fields and values of a :class:`~netsculpt.PruneConfig`."""
    from netsculpt.pruning.config import stored_config

    found: list[tuple[str, Any]] = []
    if "config" in meta:
        found.append(("meta.config", meta["config"]))
    steps = meta.get("steps")
    if isinstance(steps, list):
        for k, step in enumerate(steps):
            if isinstance(step, dict) and "config" in step:
                found.append((f"meta.steps[{k}].config", step["config"]))
    for where, value in found:
        try:
            stored_config(value)
        except NetsculptError as exc:
            raise _fail(where, str(exc)) from None


_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)  # possessive: linear
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = np.full(256, -1, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1


def _json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text``, counted without recursion."""
    opens = text.count("[") + text.count("{")
    if opens <= MAX_JSON_DEPTH:
        return opens
    brackets = _JSON_STRING.sub("", text).encode("utf-8").translate(None, _NOT_BRACKETS)
    steps = _BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def parse_json(text: str | bytes, *, what: str, error: type[NetsculptError] = PlanError) -> Any:
    """Decode JSON read from a file a user may not have written, with bounded cost.

    Text over :data:`MAX_JSON_BYTES`, bytes that are not UTF-8, nesting deeper than
    :data:`MAX_JSON_DEPTH` and malformed JSON raise ``error`` naming ``what``, before the
    decoder can run out of memory or recursion.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise error(f"{what} must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_JSON_BYTES:
        raise error(
            f"{what} is {len(text)} bytes, more than the {MAX_JSON_BYTES} netsculpt reads; it "
            f"is not a file netsculpt wrote"
        )
    if not isinstance(text, str):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                f"{what} is not UTF-8 text (byte {exc.start}: {exc.reason}); it is not a file "
                f"netsculpt wrote"
            ) from exc
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(
            f"{what} nests arrays and objects {depth} deep, more than {MAX_JSON_DEPTH}; it is "
            f"not a file netsculpt wrote"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {_short(str(exc), 200)}") from exc


def encode_indices(indices: Sequence[int]) -> list[list[int]]:
    """Compress sorted indices into ``[start, stop)`` runs."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([int(i), int(i) + 1])
    return runs


def decode_indices(runs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Expand ``[start, stop)`` runs (checked first by :func:`check_plan_data`)."""
    out: list[int] = []
    for start, stop in runs:
        out.extend(range(int(start), int(stop)))
    return tuple(out)


@dataclass(frozen=True)
class GroupDecision:
    """What the plan does to one group."""

    name: str
    kind: str
    size: int
    kept: tuple[int, ...]

    @property
    def n_kept(self) -> int:
        return len(self.kept)


@dataclass(frozen=True)
class Plan:
    """What to cut, as plain data. Build one with :func:`netsculpt.plan`.

    Attributes:
        tensors: parameter or buffer name -> {dimension: kept indices}.
        shapes: original shape of every tensor in ``tensors`` (checked when applying).
        attrs: ``(module, attribute, new value)`` to set on the pruned copy.
        groups: the decision per group (for reports and search).
        removed: modules replaced by a zero branch (whole residual branches removed).
        meta: how the plan was made: ``meta["config"]`` is the
            :class:`~netsculpt.PruneConfig` used, as a dict (read back by :attr:`config`);
            ratio, importance, round_to, model class and the resolved global ranking.
        lowrank: ``(module, rank)`` for Linear/Conv layers replaced, after slicing, by two
            thinner layers from a truncated SVD (see :func:`netsculpt.factorize`).
        norms: ``(module, width before, width after)`` for the LayerNorm and RMS norms over
            a pruned residual width: applying the plan makes each keep dividing by its width
            before (an RMS norm's epsilon and weight are rescaled, a LayerNorm becomes a
            ``WidthLayerNorm``), so the pruned model computes what the original does with
            the removed channels zeroed (``PruneConfig(residual=True)``).
        slices: ``(module, dim, start, end, new start, new end)`` for literal slices in a
            module's code that take a whole piece of a concatenation: applying the plan
            rewrites the bounds (``start:end`` as the code writes them) in that module's
            forward (:mod:`netsculpt.pruning._rewrite`).
        precision: ``(module, "int8" | "float")``: how :func:`netsculpt.quantize` treats
            each layer of the pruned model (``"*"``: every layer no other entry names); a
            module marked float joins the quantizer's ``float_layers``. Empty for a float
            plan. Weights are not touched by it: only ``ns.quantize`` reads it.
        quantize: the :class:`~netsculpt.QuantizeConfig` fields the precision goes with
            (mode, calibration, types), as a dict; None for a float plan.
        lists: ``(module list, entries before, kept entries)`` of ``nn.ModuleList`` modules that
            lose entries (whole experts removed by :func:`netsculpt.prune_experts`): the
            kept entries move up to positions ``0, 1, ...``, so their parameters are named
            by their new positions in the pruned model. Every other field names modules and
            tensors of the original model.
        gathers: ``(tensor, dim, by, kept per index of by)``: positions kept along ``dim``
            chosen separately for each index along ``by``, the same number for each (the
            neurons each expert of stacked ``[num_experts, ...]`` weights keeps by its own
            importance). Applied before ``tensors`` (which may still remove indices along
            ``by``, whole experts); a ``(tensor, dim)`` is in one of the two, not both.
    """

    tensors: Mapping[str, Mapping[int, tuple[int, ...]]]
    shapes: Mapping[str, tuple[int, ...]]
    attrs: tuple[tuple[str, str, Any], ...] = ()
    groups: tuple[GroupDecision, ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    lowrank: tuple[tuple[str, int], ...] = ()
    norms: tuple[tuple[str, int, int], ...] = ()
    slices: tuple[tuple[str, int, int, int, int, int], ...] = ()
    precision: tuple[tuple[str, str], ...] = ()
    quantize: Mapping[str, Any] | None = None
    lists: tuple[tuple[str, int, tuple[int, ...]], ...] = ()
    gathers: tuple[tuple[str, int, int, tuple[tuple[int, ...], ...]], ...] = ()

    @property
    def widths(self) -> dict[str, tuple[int, int]]:
        """Group name -> (original units, kept units)."""
        return {g.name: (g.size, g.n_kept) for g in self.groups}

    def kept_shape(self, name: str) -> tuple[int, ...]:
        """The shape the plan gives the tensor ``name`` (one of :attr:`shapes`)."""
        shape = list(self.shapes[name])
        for dim, idx in self.tensors.get(name, {}).items():
            shape[dim] = len(idx)
        for tensor, dim, _by, rows in self.gathers:
            if tensor == name:
                shape[dim] = len(rows[0])
        return tuple(shape)

    @property
    def config(self) -> PruneConfig | None:
        """The :class:`~netsculpt.PruneConfig` the plan was made with (None for a plan not
        made by :func:`netsculpt.plan`, such as a factorisation or a composed plan)."""
        from netsculpt.pruning.config import stored_config

        data = self.meta.get("config")
        return None if data is None else stored_config(data)

    @property
    def is_identity(self) -> bool:
        return (
            not self.removed
            and not self.lowrank
            and all(len(kept) == size for _, size, kept in self.lists)
            and all(len(rows[0]) == self.shapes[name][dim] for name, dim, _by, rows in self.gathers)
            and all(
                len(idx) == self.shapes[name][dim]
                for name, dims in self.tensors.items()
                for dim, idx in dims.items()
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "meta": dict(self.meta),
            "tensors": {
                name: {str(d): encode_indices(idx) for d, idx in dims.items()}
                for name, dims in self.tensors.items()
            },
            "shapes": {name: list(s) for name, s in self.shapes.items()},
            "attrs": [list(a) for a in self.attrs],
            "groups": [
                {"name": g.name, "kind": g.kind, "size": g.size, "kept": encode_indices(g.kept)}
                for g in self.groups
            ],
            "removed": [list(r) for r in self.removed],
            "lowrank": [list(r) for r in self.lowrank],
            **({"norms": [list(n) for n in self.norms]} if self.norms else {}),
            **({"slices": [list(r) for r in self.slices]} if self.slices else {}),
            **({"precision": [list(p) for p in self.precision]} if self.precision else {}),
            **({"quantize": dict(self.quantize)} if self.quantize is not None else {}),
            **(
                {"lists": [[m, n, encode_indices(kept)] for m, n, kept in self.lists]}
                if self.lists
                else {}
            ),
            **(
                {
                    "gathers": [
                        [name, dim, by, [encode_indices(r) for r in rows]]
                        for name, dim, by, rows in self.gathers
                    ]
                }
                if self.gathers
                else {}
            ),
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, shapes: Mapping[str, Sequence[int]] | None = None
    ) -> Plan:
        """The plan in ``data`` (as :meth:`to_dict` writes it), checked field by field.

        ``shapes``: the tensor shapes of the model the plan is for (name -> shape); given,
        the plan must match them before any index list is expanded. See
        :func:`check_plan_data`.
        """
        check_plan_data(data, shapes=shapes)
        return cls(
            tensors={
                name: {int(d): decode_indices(runs) for d, runs in dims.items()}
                for name, dims in data["tensors"].items()
            },
            shapes={name: tuple(s) for name, s in data["shapes"].items()},
            attrs=tuple((m, a, v) for m, a, v in data.get("attrs", [])),
            groups=tuple(
                GroupDecision(
                    name=g["name"], kind=g["kind"], size=g["size"], kept=decode_indices(g["kept"])
                )
                for g in data.get("groups", [])
            ),
            removed=tuple((m, k) for m, k in data.get("removed", [])),
            meta=dict(data.get("meta", {})),
            lowrank=tuple((m, r) for m, r in data.get("lowrank", [])),
            norms=tuple((m, b, a) for m, b, a in data.get("norms", [])),
            slices=tuple((m, d, s, e, ns_, ne) for m, d, s, e, ns_, ne in data.get("slices", [])),
            precision=tuple((m, p) for m, p in data.get("precision", [])),
            quantize=dict(data["quantize"]) if data.get("quantize") is not None else None,
            lists=tuple((m, n, decode_indices(runs)) for m, n, runs in data.get("lists", [])),
            gathers=tuple(
                (name, dim, by, tuple(decode_indices(r) for r in rows))
                for name, dim, by, rows in data.get("gathers", [])
            ),
        )

    @classmethod
    def from_json(
        cls, text: str | bytes, *, shapes: Mapping[str, Sequence[int]] | None = None
    ) -> Plan:
        """The plan in JSON ``text``; size and nesting are bounded before it is decoded."""
        return cls.from_dict(parse_json(text, what="plan"), shapes=shapes)

    def then(self, second: Plan) -> Plan:
        """The plan that does ``self`` and then ``second`` (made on the pruned model).

        Iterative pruning applies several plans in turn; the composed plan replays all of
        them on the original architecture at once, so the result saves and reloads. Where
        ``self`` removed entries of a ``ModuleList`` (:attr:`lists`), the names ``second``
        gives modules and tensors in the renumbered entries are mapped back to the
        original's.
        """
        if self.lists:
            second = _renamed(second, _original_names(self.lists))
        factored = [m for m, _ in self.lowrank]
        for name in second.tensors:
            if any(name.startswith(m + ".") for m in factored):
                raise PlanError(
                    f"the second plan changes {name!r} inside a layer the first plan factorised; "
                    f"factorise last (netsculpt.factorize after pruning)"
                )
        tensors: dict[str, dict[int, tuple[int, ...]]] = {
            n: dict(d) for n, d in self.tensors.items()
        }
        shapes = dict(self.shapes)
        per_index = {(t, d) for t, d, _by, _rows in (*self.gathers, *second.gathers)}
        for name, dims in second.tensors.items():
            base_shape = self.shapes.get(name, second.shapes[name])
            shapes.setdefault(name, tuple(base_shape))
            first = tensors.setdefault(name, {})
            for dim, idx in dims.items():
                if (name, dim) in per_index:
                    continue  # composed with the gathers below
                before = first.get(dim, tuple(range(base_shape[dim])))
                first[dim] = tuple(before[i] for i in idx)
        gathers = _compose_gathers(self, second, per_index)
        for name, dim, _by, _rows in gathers:
            shapes.setdefault(name, tuple(second.shapes[name]))  # first left it whole
            tensors.get(name, {}).pop(dim, None)
        tensors = {name: dims for name, dims in tensors.items() if dims}
        by_name = {g.name: g for g in self.groups}
        groups = []
        for g in second.groups:
            old = by_name.pop(g.name, None)
            if old is not None and len(old.kept) == g.size:
                groups.append(
                    GroupDecision(g.name, g.kind, old.size, tuple(old.kept[i] for i in g.kept))
                )
            else:
                groups.append(g)
        groups.extend(by_name.values())
        # a norm resized twice keeps dividing by its width before the first plan
        norms = {m: (b, a) for m, b, a in self.norms}
        for module, wide, narrow in second.norms:
            norms[module] = (norms.get(module, (wide, narrow))[0], narrow)
        return Plan(
            tensors=tensors,
            shapes=shapes,
            attrs=self.attrs + second.attrs,
            groups=tuple(groups),
            removed=self.removed + second.removed,
            meta={"steps": [dict(self.meta), dict(second.meta)]},
            lowrank=self.lowrank + second.lowrank,
            norms=tuple((m, b, a) for m, (b, a) in norms.items()),
            # bounds are recorded as the module's code writes them: the later plan's win
            slices=tuple(
                {(r[0], r[1], r[2], r[3]): r for r in self.slices + second.slices}.values()
            ),
            # a precision given later wins, layer by layer
            precision=tuple({**dict(self.precision), **dict(second.precision)}.items()),
            quantize=second.quantize if second.quantize is not None else self.quantize,
            lists=_compose_lists(self.lists, second.lists),
            gathers=gathers,
        )

    def with_precision(self, precision: Mapping[str, str], config: Any = None) -> Plan:
        """This plan with a precision per layer for :func:`netsculpt.quantize`.

        Args:
            precision: module name -> ``"int8"`` or ``"float"``; ``"*"`` covers every layer
                no other entry names (``{"*": "int8"}``: the whole model in int8).
            config: the :class:`~netsculpt.QuantizeConfig` the precision goes with (mode,
                calibration); None keeps the plan's, or the default config.

        Raises:
            PlanError: a precision other than ``"int8"`` / ``"float"``, or an empty name.
        """
        from netsculpt.quantization.config import QuantizeConfig

        if config is not None and not isinstance(config, QuantizeConfig):
            raise PlanError(
                f"Plan.with_precision needs a QuantizeConfig as config, got "
                f"{type(config).__name__}; pass ns.QuantizeConfig(mode=...)"
            )
        if not isinstance(precision, Mapping):
            raise PlanError(
                f"Plan.with_precision needs a dict of module -> 'int8' | 'float', got "
                f"{type(precision).__name__}"
            )
        entries = [[str(m), p] for m, p in precision.items()]
        quantize = config.to_dict() if config is not None else self.quantize
        _check_precision(entries, quantize)
        return dataclasses.replace(
            self, precision=tuple((m, p) for m, p in entries), quantize=quantize
        )

    @property
    def quantize_config(self) -> Any:
        """The :class:`~netsculpt.QuantizeConfig` that quantizes the pruned model as this
        plan says: its ``quantize`` fields, with every module marked ``"float"`` added to
        ``float_layers``. None for a plan without precision (a float plan)."""
        from netsculpt.quantization.config import QuantizeConfig

        if not self.precision and self.quantize is None:
            return None
        if dict(self.precision).get(EVERY_LAYER) == "float":
            raise PlanError(
                "the plan keeps every layer ('*') in float; it has no int8 layer to quantize"
            )
        floats = tuple(m for m, p in self.precision if p == "float" and m != EVERY_LAYER)
        return QuantizeConfig.from_dict(self.quantize or {}).keeping_float(floats)

    def describe(self) -> str:
        lines = [f"plan ({self.meta.get('importance', '?')}, ratio {self.meta.get('ratio')})"]
        for g in self.groups:
            if g.n_kept != g.size:
                lines.append(f"  {g.name:<48} {g.kind:<8} {g.size:>6} -> {g.n_kept}")
        for module, how in self.removed:
            lines.append(f"  {module:<48} removed ({how})")
        for module, rank in self.lowrank:
            lines.append(f"  {module:<48} factorised to rank {rank}")
        for module, dim, start, end, new_start, new_end in self.slices:
            where = f"{module or '<top>'} [{start}:{end}] (dim {dim})"
            lines.append(f"  {where:<48} slice rewritten to [{new_start}:{new_end}]")
        grouped = {g.name for g in self.groups}
        for module, size, kept in self.lists:
            if len(kept) != size and module not in grouped:
                lines.append(f"  {module:<48} entries  {size:>6} -> {len(kept)}")
        for module, precision in self.precision:
            lines.append(f"  {module or '<top>':<48} {precision} (ns.quantize)")
        for step in _approximate_steps(self.meta):
            lines.append(f"  {step}: approximate, not verified against the original (see meta)")
        return "\n".join(lines)


def _original_names(
    lists: Sequence[tuple[str, int, tuple[int, ...]]],
) -> Callable[[str], str]:
    """Maps a module or tensor name of the model ``lists`` were applied to back to the
    original model's name: ``experts.1.w`` is ``experts.3.w`` when entries 0 and 3 were kept.
    Outer lists come first, so the path of a list nested in a renumbered entry (recorded with
    original names) matches once the outer index is mapped back."""
    order = sorted(lists, key=lambda entry: entry[0].count("."))

    def original(name: str) -> str:
        for path, _size, kept in order:
            prefix = f"{path}." if path else ""
            if not name.startswith(prefix):
                continue
            index, dot, rest = name[len(prefix) :].partition(".")
            if index.isdigit() and int(index) < len(kept):
                name = f"{prefix}{kept[int(index)]}{dot}{rest}"
        return name

    return original


def _renamed(plan: Plan, original: Callable[[str], str]) -> Plan:
    """``plan`` with every module and tensor name passed through ``original``."""
    return dataclasses.replace(
        plan,
        tensors={original(n): dims for n, dims in plan.tensors.items()},
        shapes={original(n): shape for n, shape in plan.shapes.items()},
        attrs=tuple((original(m), a, v) for m, a, v in plan.attrs),
        groups=tuple(dataclasses.replace(g, name=original(g.name)) for g in plan.groups),
        removed=tuple((original(m), k) for m, k in plan.removed),
        lowrank=tuple((original(m), r) for m, r in plan.lowrank),
        norms=tuple((original(m), b, a) for m, b, a in plan.norms),
        slices=tuple((original(r[0]), *r[1:]) for r in plan.slices),
        precision=tuple((m if m == EVERY_LAYER else original(m), p) for m, p in plan.precision),
        lists=tuple((original(m), n, kept) for m, n, kept in plan.lists),
        gathers=tuple((original(t), d, by, rows) for t, d, by, rows in plan.gathers),
    )


def _compose_gathers(
    first: Plan, second: Plan, pairs: set[tuple[str, int]]
) -> tuple[tuple[str, int, int, tuple[tuple[int, ...], ...]], ...]:
    """Per-index kept positions of ``first`` then ``second`` (named as in the original) for
    every ``(tensor, dim)`` either gathers: each index along ``by`` (an expert) keeps what
    ``first`` kept for it, narrowed by what ``second`` kept for the same index, which
    ``second`` numbers among the indices ``first`` kept. An index ``first`` removed along
    ``by`` gets any rows of the right length (they are sliced away)."""
    g1 = {(t, d): (by, rows) for t, d, by, rows in first.gathers}
    g2 = {(t, d): (by, rows) for t, d, by, rows in second.gathers}
    out = []
    for name, dim in sorted(pairs):
        by = (g1.get((name, dim)) or g2[(name, dim)])[0]
        shape = first.shapes.get(name, second.shapes.get(name, ()))
        kept_by = first.tensors.get(name, {}).get(by, tuple(range(shape[by])))
        position = {e: j for j, e in enumerate(kept_by)}
        rows = []
        for e in range(shape[by]):
            before = (
                g1[(name, dim)][1][e]
                if (name, dim) in g1
                else first.tensors.get(name, {}).get(dim, tuple(range(shape[dim])))
            )
            j = position.get(e, 0)
            then = (
                g2[(name, dim)][1][j]
                if (name, dim) in g2
                else second.tensors.get(name, {}).get(dim, tuple(range(len(before))))
            )
            rows.append(tuple(before[i] for i in then))
        out.append((name, dim, by, tuple(rows)))
    return tuple(out)


def _compose_lists(
    first: Sequence[tuple[str, int, tuple[int, ...]]],
    second: Sequence[tuple[str, int, tuple[int, ...]]],
) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """The entries kept by ``first`` and then ``second`` (both named as in the original)."""
    out = {path: (size, kept) for path, size, kept in first}
    for path, size, kept in second:
        before = out.get(path)
        if before is not None:
            size, kept = before[0], tuple(before[1][i] for i in kept)
        out[path] = (size, kept)
    return tuple((path, size, kept) for path, (size, kept) in out.items())


def _approximate_steps(meta: Any) -> list[str]:
    """The steps recorded in ``meta`` (and its composed ``steps``) that are not exact."""
    if not isinstance(meta, Mapping):
        return []
    found = [str(meta.get("step", "a step"))] if meta.get("exact") is False else []
    steps = meta.get("steps")
    for step in steps if isinstance(steps, list) else []:
        found.extend(_approximate_steps(step))
    return found
