"""The options of :func:`netsculpt.elastic` as one value.

An :class:`ElasticConfig` says which parts of a model become elastic and how far they may
shrink::

    import netsculpt as ns

    config = ns.ElasticConfig(keep=(0.25, 0.5, 0.75, 1.0), round_to=8, depth=True)
    supernet = ns.elastic(model, example_inputs, config)

It is frozen, keyword-only, checked when it is made (a bad value raises an
:class:`~netsculpt.errors.InputError` that names the fix) and round-trips through JSON, so a
saved super-network records exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netsculpt._checks import check_config_fields, config_json
from netsculpt.errors import InputError

__all__ = ["ElasticConfig"]

#: most keep choices one group may offer (each is one Optuna categorical value)
MAX_CHOICES = 64


def _fail(field: str, value: Any, problem: str, example: str) -> InputError:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return InputError(f"ElasticConfig({field}={text}): {problem}; e.g. {field}={example}")


def _fractions(value: Any, field: str) -> tuple[float, ...]:
    example = "(0.25, 0.5, 0.75, 1.0)"
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise _fail(field, value, "keep fractions are a sequence of numbers in (0, 1]", example)
    out = []
    for item in value:
        if (
            isinstance(item, bool)
            or not isinstance(item, (int, float))
            or not math.isfinite(item)
            or not 0 < item <= 1
        ):
            raise _fail(
                field,
                value,
                f"{item!r} is not a keep fraction in (0, 1] (1.0 keeps a group whole)",
                example,
            )
        out.append(float(item))
    if not out:
        raise _fail(field, value, "at least one keep fraction is needed", example)
    if len(out) > MAX_CHOICES:
        raise _fail(field, value, f"at most {MAX_CHOICES} fractions", example)
    return tuple(sorted(set(out)))


def _widths(value: Any) -> dict[str, tuple[int, ...]]:
    example = "{'layer1.0.conv1': (16, 32, 64)}"
    if not isinstance(value, Mapping):
        raise _fail(
            "widths", value, "widths map a group name or 're:' pattern to unit counts", example
        )
    out: dict[str, tuple[int, ...]] = {}
    for key, counts in value.items():
        if not isinstance(key, str) or not key:
            raise _fail("widths", value, f"key {key!r} is not a group name", example)
        if isinstance(counts, (str, bytes, Mapping)) or not hasattr(counts, "__iter__"):
            raise _fail("widths", value, f"{key!r} needs a sequence of unit counts", example)
        items = list(counts)
        if not items or len(items) > MAX_CHOICES:
            raise _fail("widths", value, f"{key!r} needs 1 to {MAX_CHOICES} unit counts", example)
        for n in items:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise _fail(
                    "widths", value, f"{key!r}: {n!r} is not a positive number of units", example
                )
        out[key] = tuple(sorted(set(items)))
    return dict(sorted(out.items()))


def _names(value: Any, field: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, (bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise _fail(field, value, "a sequence of module names or 're:' patterns", example)
    items = tuple(value)
    if not all(isinstance(v, str) and v for v in items):
        raise _fail(field, value, "every entry must be a non-empty str", example)
    return items


@dataclass(frozen=True, kw_only=True)
class ElasticConfig:
    """Which groups of a model are elastic, and the widths and depths they may take.

    Attributes:
        keep: the keep fractions every elastic group offers, in (0, 1]; each becomes a
            width of ``ceil(fraction * size)`` units, rounded to ``round_to``. ``1.0``
            (always added) is the full width.
        widths: per group name (or ``"re:"`` pattern), the exact unit counts offered
            instead of ``keep`` (a unit is a channel, a neuron, or an attention head with
            the query heads that share its key/value head).
        groups: the groups made elastic: names or ``"re:"`` patterns, ``"*"`` for every
            prunable group.
        exclude: module names or patterns whose groups stay at full width.
        round_to: widths at multiples of this many channels (8 or 16 suit CPU kernels).
        depth: elastic depth: ``True`` lets every removable block of ``graph.blocks`` (a
            residual block, or an attention or feed-forward sub-layer) be dropped, a tuple
            names the blocks (or patterns) that may be; ``False`` keeps the depth fixed.
        importance: the registered criterion that orders the units of every group once;
            every sub-network keeps the most important ones (a prefix of that order).
        protect_outputs: keep the model's output shapes (the classifier's classes).
        seed: seed for criteria that draw.
    """

    keep: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    widths: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    groups: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    round_to: int = 1
    depth: bool | tuple[str, ...] = False
    importance: str = "magnitude"
    protect_outputs: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        keep = _fractions(self.keep, "keep")
        object.__setattr__(self, "keep", tuple(sorted({*keep, 1.0})))
        object.__setattr__(self, "widths", _widths(self.widths))
        object.__setattr__(self, "groups", _names(self.groups, "groups", "('*',)"))
        object.__setattr__(self, "exclude", _names(self.exclude, "exclude", "('lm_head',)"))
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int):
            raise _fail("round_to", self.round_to, "round_to must be an integer", "8")
        if self.round_to < 1:
            raise _fail("round_to", self.round_to, "round_to must be at least 1", "8")
        if not isinstance(self.depth, bool):
            object.__setattr__(
                self, "depth", _names(self.depth, "depth", "('layers.3', 'layers.4')")
            )
        if not isinstance(self.importance, str) or not self.importance:
            raise _fail("importance", self.importance, "a registered criterion name", "'magnitude'")
        if not isinstance(self.protect_outputs, bool):
            raise _fail("protect_outputs", self.protect_outputs, "True or False", "True")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise _fail("seed", self.seed, "seed must be an integer >= 0", "0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "keep": list(self.keep),
            "widths": {k: list(v) for k, v in self.widths.items()},
            "groups": list(self.groups),
            "exclude": list(self.exclude),
            "round_to": self.round_to,
            "depth": self.depth if isinstance(self.depth, bool) else list(self.depth),
            "importance": self.importance,
            "protect_outputs": self.protect_outputs,
            "seed": self.seed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ElasticConfig:
        """The config :meth:`to_dict` wrote, checked as data (a folder may hold anything).

        Raises:
            InputError: not a mapping, an unknown field, or a value the field refuses.
        """
        fields = check_config_fields(cls, data)
        if isinstance(fields.get("depth"), list):
            fields["depth"] = tuple(fields["depth"])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> ElasticConfig:
        """The config :meth:`to_json` wrote."""
        return cls.from_dict(config_json(cls, text))
