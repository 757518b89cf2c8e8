"""The space of an elastic super-network, as plain data.

Every choice is a width (how many units of one group a sub-network keeps) or a depth choice
(whether a removable block is kept). A sub-network is a plain dict from choice name to value,
JSON-able as it is::

    {"stem.0": 24, "layer1.0.conv1": 16, "block:layer2.1": False}

Width choices are named after their group; depth choices ``"block:<module path>"``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from netsculpt.errors import InputError

__all__ = ["Arch", "Choice", "ElasticSpace", "arch_key"]

#: a sub-network: choice name -> units kept (int) or block kept (bool)
Arch = dict[str, "int | bool"]

BLOCK = "block:"


@dataclass(frozen=True)
class Choice:
    """One decision of the space.

    Attributes:
        name: the group name (widths) or ``"block:<module path>"`` (depth).
        kind: ``"width"`` or ``"depth"``.
        options: the values allowed, smallest first: unit counts, or ``(False, True)``.
        unit_width: channels per unit (a head's size, 1 for channels and neurons).
    """

    name: str
    kind: str
    options: tuple[Any, ...]
    unit_width: int = 1

    @property
    def largest(self) -> Any:
        return self.options[-1]

    @property
    def smallest(self) -> Any:
        return self.options[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "options": list(self.options),
            "unit_width": self.unit_width,
        }


def _rng(rng: Any) -> random.Random:
    if rng is None:
        return random.Random()
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**63 - 1)))
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise InputError(
        f"sample(rng) takes a random.Random, a numpy Generator or an int seed, got "
        f"{type(rng).__name__}; e.g. supernet.sample(random.Random(0))"
    )


def arch_key(arch: Mapping[str, Any]) -> str:
    """A canonical text for a checked sub-network (its cache and study key)."""
    return json.dumps(dict(sorted(arch.items())), separators=(",", ":"))


class ElasticSpace:
    """The choices of a super-network, in graph order: widths first, then depths."""

    def __init__(self, choices: tuple[Choice, ...]) -> None:
        self.choices = choices
        self._by_name = {c.name: c for c in choices}

    def __iter__(self) -> Iterator[Choice]:
        return iter(self.choices)

    def __len__(self) -> int:
        return len(self.choices)

    def __getitem__(self, name: str) -> Choice:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        widths = sum(c.kind == "width" for c in self.choices)
        return (
            f"ElasticSpace({widths} widths, {len(self.choices) - widths} depth choices, "
            f"{self.size:.3g} sub-networks)"
        )

    @property
    def size(self) -> float:
        """How many sub-networks the space holds."""
        return float(np.prod([float(len(c.options)) for c in self.choices]))

    def largest(self) -> Arch:
        """The full model: every group at full width, every block kept."""
        return {c.name: c.largest for c in self.choices}

    def smallest(self) -> Arch:
        """Every group at its smallest width, every elastic block dropped."""
        return {c.name: c.smallest for c in self.choices}

    def sample(self, rng: Any = None) -> Arch:
        """A sub-network drawn uniformly, choice by choice (``rng``: a ``random.Random``,
        a numpy ``Generator`` or an int seed)."""
        r = _rng(rng)
        return {c.name: c.options[r.randrange(len(c.options))] for c in self.choices}

    def check(self, arch: Any, *, where: str = "arch") -> Arch:
        """``arch`` as a complete sub-network of this space; missing choices take their
        largest value.

        Raises:
            InputError: not a dict, an unknown choice, or a value the choice does not offer
                (the message lists what it offers).
        """
        if not isinstance(arch, Mapping):
            raise InputError(
                f"{where} must be a dict from choice name to value, got {type(arch).__name__}; "
                f"e.g. supernet.largest() or supernet.sample(0)"
            )
        unknown = [k for k in arch if k not in self._by_name]
        if unknown:
            some = ", ".join(repr(c.name) for c in self.choices[:5])
            raise InputError(
                f"{where} names {unknown[:3]!r}, which the space does not have; its choices "
                f"are {some}{', ...' if len(self.choices) > 5 else ''} (see supernet.space)"
            )
        out: Arch = {}
        for c in self.choices:
            value = arch.get(c.name, c.largest)
            if c.kind == "depth":
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                value = int(value) if ok else value
            if not ok or value not in c.options:
                shown = repr(value)[:40]
                raise InputError(
                    f"{where}[{c.name!r}] = {shown} is outside the space: {c.name!r} offers "
                    f"{list(c.options)}"
                    + (" units" if c.kind == "width" else " (keep the block or not)")
                )
            out[c.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"choices": [c.to_dict() for c in self.choices]}
