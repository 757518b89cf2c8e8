"""The live search display: trials done, front size, best score per latency band.

It reads the study itself, so it shows the work of every worker on the study, and is
used both as an Optuna callback (one process) and polled by the parent of worker
processes. With ``enabled=False`` it does nothing.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self

import numpy as np
import optuna
from optuna.trial import TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from netsculpt.studies._pareto import pareto_mask, to_losses
from netsculpt.studies._resume import counts_as_done

__all__ = ["LATENCY_BANDS", "SearchProgress", "summarise"]

#: latency bands, as fractions of the dense model's latency
LATENCY_BANDS = ((0.0, 0.5), (0.5, 0.67), (0.67, 0.8), (0.8, 1.0), (1.0, float("inf")))


def summarise(study: optuna.Study, n_trials: int) -> dict[str, Any]:
    """Counts, front size and the best score per latency band of ``study`` right now."""
    trials = study.get_trials(deepcopy=False)
    complete = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and "score" in t.user_attrs
        and "latency_ms" in t.user_attrs
    ]
    feasible = [
        t for t in complete if all(float(v) <= 0 for v in t.user_attrs.get("constraints", []))
    ]
    front = 0
    if feasible and study.user_attrs.get("netsculpt:objectives"):
        from netsculpt.studies.objective import OBJECTIVES

        objs = study.user_attrs["netsculpt:objectives"]
        values = np.array([[float(t.user_attrs[o]) for o in objs] for t in feasible])
        front = int(pareto_mask(to_losses(values, [OBJECTIVES[o] for o in objs])).sum())
    baseline = study.user_attrs.get("netsculpt:baseline") or {}
    dense = baseline.get("latency_ms")
    bands = []
    if dense:
        for lo, hi in LATENCY_BANDS:
            inside = [t for t in feasible if lo <= t.user_attrs["latency_ms"] / dense < hi]
            best = max(inside, key=lambda t: t.user_attrs["score"], default=None)
            bands.append(
                {
                    "band": (lo, hi),
                    "count": len(inside),
                    "best_score": None if best is None else float(best.user_attrs["score"]),
                    "trial": None if best is None else best.number,
                }
            )
    return {
        "done": sum(1 for t in trials if counts_as_done(t)),
        "n_trials": n_trials,
        "complete": len(complete),
        "failed": sum(1 for t in trials if t.state == TrialState.FAIL and counts_as_done(t)),
        "running": sum(1 for t in trials if t.state == TrialState.RUNNING),
        "front": front,
        "baseline": baseline,
        "bands": bands,
    }


def render(summary: dict[str, Any], elapsed: float, study_name: str) -> Group:
    """A rich renderable of :func:`summarise`'s output."""
    head = Text.assemble(
        ("netsculpt search ", "bold"),
        (study_name, "cyan"),
        f"  {summary['done']}/{summary['n_trials']} trials done",
        f" ({summary['failed']} failed, {summary['running']} running)",
        f"  front: {summary['front']}",
        f"  {elapsed:,.0f} s",
    )
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("latency vs dense")
    table.add_column("trials", justify="right")
    table.add_column("best score", justify="right")
    table.add_column("trial", justify="right")
    base = summary["baseline"]
    for band in summary["bands"]:
        lo, hi = band["band"]
        label = (
            f"<= {hi:.2f}x"
            if lo == 0
            else (f"> {lo:.2f}x" if hi == float("inf") else f"{lo:.2f}-{hi:.2f}x")
        )
        table.add_row(
            label,
            str(band["count"]),
            "-" if band["best_score"] is None else f"{band['best_score']:.4f}",
            "-" if band["trial"] is None else str(band["trial"]),
        )
    if base:
        table.caption = (
            f"dense: score {base.get('score', float('nan')):.4f}, "
            f"{base.get('latency_ms', float('nan')):.3f} ms"
        )
    return Group(head, table)


class SearchProgress:
    """A rich ``Live`` display of a study; a context manager."""

    def __init__(
        self,
        study: optuna.Study,
        n_trials: int,
        *,
        enabled: bool = True,
        console: Console | None = None,
        min_interval: float = 0.5,
    ) -> None:
        self.study = study
        self.n_trials = n_trials
        self.enabled = enabled
        self._console = console
        self._live: Live | None = None
        self._start = time.monotonic()
        self._last = 0.0
        self._min_interval = min_interval

    def __enter__(self) -> Self:
        if self.enabled:
            self._start = time.monotonic()
            self._live = Live(
                self._renderable(), console=self._console, refresh_per_second=4, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._renderable())
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def _renderable(self) -> Group:
        return render(
            summarise(self.study, self.n_trials),
            time.monotonic() - self._start,
            self.study.study_name,
        )

    def refresh(self) -> None:
        """Re-read the study and redraw (at most every ``min_interval`` seconds)."""
        if self._live is None:
            return
        now = time.monotonic()
        if now - self._last < self._min_interval:
            return
        self._last = now
        self._live.update(self._renderable())

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback form of :meth:`refresh`."""
        self.refresh()
