"""The options of :func:`netsculpt.plan` and :func:`netsculpt.prune` as one value.

A :class:`PruneConfig` is frozen, keyword-only and checked when it is made, so a bad option
fails where it is written, with the fix in the message::

    import netsculpt as ns

    config = ns.PruneConfig(ratio=0.4, importance="taylor", round_to=8, exclude=("lm_head",))
    plan = ns.plan(model, example_inputs, config, calib=batches)
    plan.meta["config"] == config.to_dict()          # every plan records its config

``ratio`` and ``importance``, the two options everyone sets, may also be passed to
``ns.plan`` / ``ns.prune`` directly; they then replace the config's. What cannot be written
down (calibration batches, a loss function, a graph) is passed to the call, never kept here.
Configs round-trip through JSON (:meth:`PruneConfig.to_dict` / :meth:`PruneConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from netsculpt._checks import check_config_fields, config_json
from netsculpt.errors import InputError, InvalidRatioError, UnknownNameError
from netsculpt.pruning.importance import IMPORTANCE

if TYPE_CHECKING:
    from netsculpt.recovery._reconstruct_config import ReconstructConfig

__all__ = ["PruneConfig", "RatioMap", "check_ratio", "resolve_config", "stored_config"]


def check_ratio(value: Any, where: str = "ratio") -> float:
    """``value`` as a float in [0, 1): the fraction of a group's width removed."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (0 <= value < 1)
    ):
        raise InvalidRatioError(
            f"{where} must be a number in [0, 1) (the fraction of width removed), got "
            f"{value!r}; for example ratio=0.3 removes 30% of every prunable group"
        )
    return float(value)


class RatioMap(Mapping[str, float]):
    """A read-only mapping from group name, ``"re:"`` pattern or ``"*"`` to a ratio.

    Keys are kept sorted, so two maps with the same items are equal, hash alike and print
    alike whatever order they were written in.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, float]) -> None:
        self._items = dict(sorted(items.items()))

    def __getitem__(self, key: str) -> float:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._items)


def _ratio(value: Any) -> float | RatioMap:
    if not isinstance(value, Mapping):
        return check_ratio(value, "PruneConfig(ratio=...)")
    if not value:
        raise InputError(
            "PruneConfig(ratio={}): an empty mapping prunes nothing; pass a number, e.g. "
            "ratio=0.3, or name groups, e.g. ratio={'layer1': 0.5, '*': 0.3}"
        )
    out: dict[str, float] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InputError(
                f"PruneConfig(ratio=...): ratio keys are group names, 're:' patterns or '*' "
                f"(non-empty strings), got {key!r} ({type(key).__name__}); e.g. "
                f"ratio={{'layer1': 0.5, '*': 0.3}}"
            )
        _pattern(key, "ratio")
        out[key] = check_ratio(item, f"PruneConfig(ratio[{key!r}])")
    return RatioMap(out)


def _pattern(name: str, field: str) -> None:
    if name.startswith("re:"):
        try:
            re.compile(name[3:])
        except re.error as exc:
            raise InputError(
                f"PruneConfig({field}=...): {name!r} is not a valid regular expression "
                f"({exc}); write a Python regex after 're:', e.g. 're:.*\\.attn'"
            ) from None


def _names(value: Any, field: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InputError(
            f"PruneConfig({field}={value!r}): a list of module names or 're:' patterns is "
            f"needed, got {type(value).__name__}; e.g. {field}={example}"
        )
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InputError(
                f"PruneConfig({field}=...): names are non-empty strings, got {item!r} "
                f"({type(item).__name__}); e.g. {field}={example}"
            )
        _pattern(item, field)
    if len(set(items)) != len(items):
        twice = sorted({n for n in items if items.count(n) > 1})
        raise InputError(
            f"PruneConfig({field}=...) names {', '.join(repr(n) for n in twice)} twice; "
            f"list each once"
        )
    return items


def _importance(value: Any) -> str:
    if callable(value) and not isinstance(value, str):
        label = getattr(value, "__name__", type(value).__name__)
        raise InputError(
            f"PruneConfig(importance={label}): importance is the name of a registered "
            f"criterion, so that the config can be written down; register it with "
            f"ns.register_importance(name) (needs_calib=True if it reads calibration "
            f"batches) and pass the name, e.g. importance='my_score'"
        )
    if not isinstance(value, str) or not value:
        raise InputError(
            f"PruneConfig(importance={value!r}): importance is a criterion name (str); choose "
            f"one of {sorted(IMPORTANCE)}"
        )
    return value


def _flag(value: Any, field: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise InputError(
            f"PruneConfig({field}={value!r}): {field} must be True or False"
            + (" (or None: as the criterion declares)" if allow_none else "")
            + f", got {value!r} ({type(value).__name__})"
        )


def _integer(value: Any, field: str, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(
            f"PruneConfig({field}={value!r}): {field} must be an integer, got {value!r} "
            f"({type(value).__name__}); e.g. {field}={example}"
        )
    if value < minimum:
        raise InputError(
            f"PruneConfig({field}={value!r}): {field} must be at least {minimum}, got {value}; "
            f"e.g. {field}={example}"
        )


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """How :func:`netsculpt.plan` decides what to cut.

    Attributes:
        ratio: fraction of each group's width removed, in [0, 1); or a mapping from group
            name (or ``"re:"`` pattern, or ``"*"`` for the rest) to a ratio. ``0.0`` plans
            nothing.
        importance: a registered criterion: ``"magnitude"``, ``"l1"``, ``"taylor"``,
            ``"activation"``, ``"random"``, ``"lamp"``, or one added with
            :func:`netsculpt.register_importance`.
        exclude: module names or ``"re:"`` patterns that keep their size.
        round_to: keep widths at multiples of this (8, 16, 64 suit most kernels).
        global_ranking: rank units of all groups together, so groups get different ratios
            while the overall ratio is kept; ``None``: as the criterion declares
            (``ranks_globally``; among the built-ins only ``lamp``).
        protect_outputs: keep every model output's shape.
        remove_blocks: names from ``graph.blocks`` to remove whole (an attention or
            feed-forward sub-layer becomes zero; a residual block becomes the identity).
        seed: seed for ``random`` and any criterion that draws.
        verify: run the pruned copy on the example inputs and check it computes what the
            original does with the removed units zeroed.
        residual: prune the residual width too (the hidden size of a transformer: its
            embeddings, every projection's input and output width and the norms), at the
            ratio of its group (named after the embedding). The LayerNorm and RMS norms
            over it are resized so that the pruned model stays exact. Off by default: it
            changes the width every layer reads, and a model whose norms netsculpt cannot
            resize raises :class:`~netsculpt.errors.UnsupportedOperationError` when it is on.
        reconstruct: after :func:`netsculpt.prune` applies the plan, refit the layers that
            read pruned activations by least squares on the calibration batches
            (:func:`netsculpt.reconstruct`): ``True`` for the default
            :class:`~netsculpt.ReconstructConfig`, or a config; ``None`` (default) does not.
            ``ns.plan`` only records it.
    """

    ratio: float | Mapping[str, float] = 0.3
    importance: str = "magnitude"
    exclude: tuple[str, ...] = ()
    round_to: int = 1
    global_ranking: bool | None = None
    protect_outputs: bool = True
    remove_blocks: tuple[str, ...] = ()
    seed: int = 0
    verify: bool = True
    residual: bool = False
    reconstruct: ReconstructConfig | None = None

    def __post_init__(self) -> None:
        self._validate()
        if self.importance not in IMPORTANCE:
            raise UnknownNameError(
                f"PruneConfig(importance={self.importance!r}) names no registered criterion; "
                f"choose one of {sorted(IMPORTANCE)}, or register yours first with "
                f"ns.register_importance({self.importance!r})"
            )

    def _validate(self) -> None:
        """Check and normalise every field; the criterion need not be registered here."""
        object.__setattr__(self, "ratio", _ratio(self.ratio))
        object.__setattr__(self, "importance", _importance(self.importance))
        object.__setattr__(
            self, "exclude", _names(self.exclude, "exclude", "('lm_head', 're:.*\\.gate')")
        )
        object.__setattr__(
            self, "remove_blocks", _names(self.remove_blocks, "remove_blocks", "('layers.3.mlp',)")
        )
        _integer(self.round_to, "round_to", 1, "8")
        _integer(self.seed, "seed", 0, "0")
        _flag(self.global_ranking, "global_ranking", allow_none=True)
        _flag(self.protect_outputs, "protect_outputs")
        _flag(self.verify, "verify")
        _flag(self.residual, "residual")
        from netsculpt.recovery._reconstruct_config import as_reconstruct_config

        object.__setattr__(
            self,
            "reconstruct",
            as_reconstruct_config(self.reconstruct, "PruneConfig(reconstruct=...)"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists, a ratio mapping as a dict)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif hasattr(value, "to_dict"):  # a ReconstructConfig
                value = value.to_dict()
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneConfig:
        """The config :meth:`to_dict` wrote; missing fields take their defaults.

        Raises:
            InputError: ``data`` is not a mapping, names a field PruneConfig does not have,
                or holds a value the field refuses (the message names it).
        """
        return cls(**_fields_of(data))

    @classmethod
    def from_json(cls, text: str) -> PruneConfig:
        """The config in JSON ``text`` (as :meth:`to_json` writes it)."""
        return cls.from_dict(config_json(cls, text))


def _fields_of(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(
            f"a PruneConfig dict is needed, got {type(data).__name__}; pass what "
            f"PruneConfig.to_dict() returned, e.g. {{'ratio': 0.3, 'importance': 'magnitude'}}"
        )
    check_config_fields(PruneConfig, data)
    return dict(data)


def stored_config(data: Any) -> PruneConfig:
    """A config read back from a plan: checked as data, but its criterion need not be
    registered in this process (applying a plan never scores anything).

    Raises:
        InputError: as :meth:`PruneConfig.from_dict`.
    """
    fields = {f.name: f.default for f in dataclasses.fields(PruneConfig)}
    fields.update(_fields_of(data))
    config = object.__new__(PruneConfig)
    for name, value in fields.items():
        object.__setattr__(config, name, value)
    config._validate()
    return config


def resolve_config(
    config: Any,
    *,
    ratio: Any = None,
    importance: Any = None,
    caller: str = "ns.plan",
) -> PruneConfig:
    """``config`` (default ``PruneConfig()``) with the ``ratio`` / ``importance`` shortcuts
    put in its place when given.

    Raises:
        InputError: ``config`` is not a PruneConfig, or a shortcut's value is refused.
    """
    if config is None:
        config = PruneConfig()
    elif not isinstance(config, PruneConfig):
        hint = ""
        if isinstance(config, (int, float)) and not isinstance(config, bool):
            hint = f"; to set the ratio alone, pass ratio={config!r}"
        elif isinstance(config, Mapping):
            hint = "; build one from a dict with ns.PruneConfig.from_dict(...)"
        raise InputError(
            f"{caller} takes a PruneConfig as its third argument, got {config!r:.60} "
            f"({type(config).__name__}); e.g. {caller}(model, inputs, "
            f"ns.PruneConfig(ratio=0.3, round_to=8)){hint}"
        )
    changes: dict[str, Any] = {}
    if ratio is not None:
        changes["ratio"] = ratio
    if importance is not None:
        changes["importance"] = importance
    return dataclasses.replace(config, **changes) if changes else config
