"""How long a recovery run may train: a number of steps, a wall-clock time, or both.

>>> Budget.parse(200)
Budget(steps=200, seconds=None)
>>> Budget.parse("90s"), Budget.parse("2m").seconds, Budget.parse("1.5h").seconds
(Budget(steps=None, seconds=90.0), 120.0, 5400.0)
>>> Budget.parse("500 steps")
Budget(steps=500, seconds=None)
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import TypeAlias

from netsculpt.errors import InputError

__all__ = ["Budget", "BudgetLike"]

#: More optimiser steps than any run takes: a larger count is a typo (or a time in ms).
_MAX_STEPS = 10**12
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(steps?|s|sec|m|min|h)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Train for at most ``steps`` optimiser steps and/or ``seconds`` of wall-clock time.

    With both set, training stops at whichever comes first. At least one must be given,
    and each given one must be positive.
    """

    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise InputError(
                "Budget needs steps or seconds, got neither; e.g. Budget(steps=200) or "
                "Budget(seconds=30)"
            )
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral):
                raise InputError(
                    f"Budget steps must be an int, got {self.steps!r}; e.g. Budget(steps=200)"
                )
            object.__setattr__(self, "steps", int(self.steps))
            if self.steps > _MAX_STEPS:
                raise InputError(
                    f"Budget steps={self.steps} is more than any run can take; pass a realistic "
                    f"number, e.g. Budget(steps=2000), or a time such as Budget(seconds=600)"
                )
            if self.steps <= 0:
                raise InputError(
                    f"Budget steps must be positive, got {self.steps}; e.g. Budget(steps=200)"
                )
        if self.seconds is not None:
            if isinstance(self.seconds, bool) or not isinstance(self.seconds, numbers.Real):
                raise InputError(
                    f"Budget seconds must be a number, got {self.seconds!r}; e.g. "
                    f"Budget(seconds=30)"
                )
            if not (math.isfinite(self.seconds) and self.seconds > 0):
                raise InputError(
                    f"Budget seconds must be positive and finite, got {self.seconds}; e.g. "
                    f"Budget(seconds=30)"
                )
            object.__setattr__(self, "seconds", float(self.seconds))

    @classmethod
    def parse(cls, value: BudgetLike) -> Budget:
        """A budget from an int (steps), a string (``"30s"``, ``"2m"``, ``"1h"``,
        ``"200"`` or ``"200 steps"``) or a :class:`Budget` (returned as is)."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool):
            raise InputError(
                f"budget must be steps, a time or a Budget, got {value!r}; pass e.g. "
                f"budget=200 (steps) or budget='30s'"
            )
        if isinstance(value, numbers.Integral):
            if value <= 0:
                raise InputError(
                    f"budget={value} leaves no training steps; pass a positive number of steps, "
                    f"e.g. budget=200, or a time such as budget='30s'"
                )
            return cls(steps=int(value))
        if isinstance(value, str):
            match = _PATTERN.match(value)
            if match is None:
                raise InputError(
                    f"budget {value!r} is not understood; write steps as 200 or '200 steps', "
                    f"time as '30s', '2m' or '1h', or pass Budget(steps=..., seconds=...)"
                )
            number, unit = match.group(1), (match.group(2) or "steps").lower()
            if unit.startswith("step"):
                if "." in number:
                    raise InputError(
                        f"budget {value!r}: a number of steps must be whole; pass e.g. "
                        f"'{max(1, round(float(number)))} steps'"
                    )
                if int(number) == 0:
                    raise InputError(
                        f"budget {value!r} leaves no training steps; pass e.g. budget=200"
                    )
                return cls(steps=int(number))
            seconds = float(number) * _UNITS[unit]
            if seconds <= 0:
                raise InputError(f"budget {value!r} leaves no training time; pass e.g. '30s'")
            return cls(seconds=seconds)
        if isinstance(value, numbers.Real):
            whole = math.isfinite(value) and float(value).is_integer()
            fix = f"pass {int(value)}" if whole and value > 0 else "pass e.g. budget=200"
            raise InputError(
                f"budget={value!r} is a {type(value).__name__}: steps are whole numbers and "
                f"times are strings; {fix} (steps) or a time such as '30s'"
            )
        raise InputError(
            f"budget must be an int (steps), a string such as '30s' or '2m', or a Budget, "
            f"got {type(value).__name__} {value!r}; pass e.g. budget=200 or budget='2m'"
        )

    def __str__(self) -> str:
        parts = []
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        return " or ".join(parts)


BudgetLike: TypeAlias = Budget | int | str
