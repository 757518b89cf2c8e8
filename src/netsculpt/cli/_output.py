"""What the command line prints: one-line errors, tables that never cut a number, latencies.

* :func:`one_line_errors` wraps a command so that any :class:`NetsculptError` prints as one
  line (``ErrorName: message``, no traceback) and exits with code 2.
* :func:`print_table` prints a rich table at least as wide as its numbers need: right-aligned
  (numeric) columns never wrap or get cut with an ellipsis, text columns fold. Piped output
  (not a terminal) gets the table's natural width, so each row stays on one line whatever
  ``COLUMNS`` says.
* :func:`compare_models` times models with their runs interleaved
  (:func:`netsculpt.measurement.api.interleaved_latency`) and returns the median with the
  p10-p90 spread; :func:`speed_words` words a ratio as "faster" or "slower".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import numpy as np
import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from netsculpt.errors import NetsculptError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "LatencySpread",
    "compare_models",
    "console",
    "fail",
    "one_line_errors",
    "print_table",
    "speed_words",
]

# soft wrap: a long line is left for the terminal to wrap, never broken inside a number
console = Console(soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

#: the narrowest a text column may fold to when the terminal is too narrow
_TEXT_MIN = 8


def fail(exc: NetsculptError) -> NoReturn:
    """Print ``exc`` as one line, ``ErrorName: message``, and exit with code 2."""
    # no markup: messages may quote text read from a file
    message = " ".join(str(exc).split())
    console.print(Text.assemble((type(exc).__name__, "bold red"), ": ", message), soft_wrap=True)
    raise typer.Exit(code=2)


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a typer command: a :class:`NetsculptError` becomes one line and exit code 2."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except NetsculptError as exc:
            fail(exc)

    return run


# --------------------------------------------------------------------------- tables


class _AtWidth:
    """Render ``renderable`` at ``width`` columns, whatever the console's width."""

    def __init__(self, renderable: Table, width: int) -> None:
        self.renderable = renderable
        self.width = width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(self.renderable, options.update_width(self.width))


def _is_numeric(column: Any) -> bool:
    return column.justify == "right"


def _cells(column: Any) -> Iterator[Any]:
    yield column.header
    yield from column.cells


def table_width(table: Table, *, out: Console | None = None) -> int:
    """The width ``table`` is printed at on ``out`` (default: the command line's console).

    Numeric (right-aligned) columns are made ``no_wrap`` and kept at their full width; text
    columns fold (never an ellipsis). On a terminal the width is the console's, or more
    when the numbers need more; elsewhere (a pipe, a file) it is the table's natural
    width, so no row is wrapped.
    """
    out = console if out is None else out
    wide = out.options.update_width(1_000_000)
    for column in table.columns:
        if _is_numeric(column):
            column.no_wrap = True
        column.overflow = "fold"
    natural = Measurement.get(out, wide, table).maximum
    if not out.is_terminal:
        return max(out.width, natural)
    padding = 2 if table.pad_edge else 1  # rich's default padding (0, 1) on each side
    borders = len(table.columns) + 1 if table.box is not None else 0
    needed = borders
    for column in table.columns:
        widest = max(out.measure(cell, options=wide).maximum for cell in _cells(column))
        needed += padding + (widest if _is_numeric(column) else min(widest, _TEXT_MIN))
    return max(out.width, needed)


def print_table(table: Table, *, out: Console | None = None) -> None:
    """Print ``table`` so that no number in it is wrapped or cut (see :func:`table_width`)."""
    out = console if out is None else out
    width = table_width(table, out=out)
    if width <= out.width:
        out.print(table)
    else:
        out.print(_AtWidth(table, width), crop=False, soft_wrap=True)


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True, kw_only=True)
class LatencySpread:
    """Median and p10-p90 spread (ms) of a model's timed runs."""

    median: float
    p10: float
    p90: float
    runs: int

    @classmethod
    def of(cls, times: Iterable[float]) -> LatencySpread:
        """The spread of ``times`` (milliseconds, at least one)."""
        values = np.asarray(list(times), dtype=float)
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        return cls(median=float(median), p10=float(p10), p90=float(p90), runs=len(values))

    @property
    def range_text(self) -> str:
        """``"1.203-1.310"``: the p10-p90 range in ms."""
        return f"{self.p10:.3f}-{self.p90:.3f}"

    def overlaps(self, other: LatencySpread) -> bool:
        """Whether the two p10-p90 ranges overlap (the difference is within the noise)."""
        return self.p10 <= other.p90 and other.p10 <= self.p90


def compare_models(
    models: Mapping[str, nn.Module],
    example_inputs: Any,
    *,
    backend: str,
    rounds: int = 10,
    repeats: int = 5,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, LatencySpread]:
    """Median and p10-p90 of each model, the models' runs interleaved (as ``compare_latency``)."""
    from netsculpt.measurement import api

    times = api.interleaved_latency(
        models,
        example_inputs,
        backend=backend,
        rounds=rounds,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
    )
    return {name: LatencySpread.of(values) for name, values in times.items()}


def speed_words(before_ms: float, after_ms: float) -> str:
    """``"1.52x faster"``, ``"1.27x slower"`` or ``"as fast (1.00x)"``: after vs before."""
    if before_ms <= 0 or after_ms <= 0:
        return "speed not measured"
    ratio = before_ms / after_ms
    if f"{ratio:.2f}" == "1.00" or f"{1 / ratio:.2f}" == "1.00":
        return "as fast (1.00x)"
    if ratio > 1:
        return f"{ratio:.2f}x faster"
    return f"{1 / ratio:.2f}x slower"


def compared_text(before: LatencySpread, after: LatencySpread, *, backend: str) -> str:
    """One sentence: how much faster or slower ``after`` is, and how it was measured."""
    noise = "; the p10-p90 ranges overlap: it may be noise" if before.overlaps(after) else ""
    return (
        f"latency {speed_words(before.median, after.median)}: median {before.median:.3f} ms "
        f"(p10-p90 {before.range_text}) -> {after.median:.3f} ms (p10-p90 {after.range_text}), "
        f"{backend}, {after.runs} interleaved runs each{noise}"
    )
