"""``ns.report``: a self-contained HTML page of a search (plotly, no CDN, works offline).

The page shows the Pareto front (validation score against measured latency; marker size
is the parameter count; the dense model marked as a star), a table of the front, and for
one trial (by default the knee of the front) the kept width of every pruned group.

Two scores, two roles: the **validation** score is what the search optimised and what the
front, the knee and every choice read, so the plot's axis is the validation score; the
**test** score of each sub-network is the figure to report, shown in the hover text and in
its own table column, and never used to choose.

A study that searched precision (``SearchSpace(precision=("float", "int8"))``) marks its
int8 trials with a diamond (legend entry "int8"), and when it holds both float and int8
trials draws two fronts: "front, float only" (``front.front_of(quantized=False)``) and
"front, float + int8" (the joint front), so the page shows what quantization added. Its
table gains a precision and a size column (the int8 ONNX file, or the float parameters).

A super-network study (``ns.search(supernet, ...)``) is marked as one: its trials are
slices of one trained super-network, never retrained, and the page gives the sub-network
(the arch: units kept per width choice, blocks kept or dropped) of every trial on the
front and of the trial drawn below.

>>> ns.report(front, "report.html")                  # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import html
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio

from netsculpt.errors import InputError, SearchError
from netsculpt.studies.front import SUPERNET_LINE

__all__ = ["SUPERNET_LINE", "front_figure", "human_size", "report", "widths_figure"]

#: the column and axis labels of the two scores
VAL_LABEL = "val score"
TEST_LABEL = "test score"
#: names of the traces a precision study adds to the front figure
INT8_TRACE = "int8"
FLOAT_FRONT_TRACE = "front, float only"
JOINT_FRONT_TRACE = "front, float + int8"
#: marker symbols of float and int8 trials
_FLOAT_SYMBOL = "circle"
_INT8_SYMBOL = "diamond"
_NOTE = (
    "val score: the task's validation split, which the search optimised and every choice "
    "(the front, the knee, pick) reads. test score: the task's test split, never used to "
    "choose; the figure to report."
)


def _supernet_detail(front: Any) -> str:
    """What the sliced trials were given: batch-norm recalibration and the elastic config."""
    config = getattr(front, "config", None)
    n = getattr(config, "bn_calib_batches", None)
    elastic = front.elastic or {}
    parts = []
    if n is not None:
        parts.append(
            f"Batch-norm statistics (where the model has batch norm) were recomputed per "
            f"sub-network on {n} training batches; the dense row is the largest sub-network."
        )
    if elastic:
        shown = ", ".join(
            f"{k}={elastic[k]!r}"
            for k in ("keep", "round_to", "depth", "importance")
            if k in elastic
        )
        parts.append(f"Elastic config: {shown}.")
    return html.escape(" ".join(parts))


def _as_front(front_or_study: Any) -> Any:
    from netsculpt.studies.front import Front

    if isinstance(front_or_study, Front):
        return front_or_study
    if isinstance(front_or_study, optuna.Study):
        return Front(front_or_study)
    raise InputError(
        f"ns.report needs a Front (from ns.search or Front.load) or an optuna.Study, got "
        f"{type(front_or_study).__name__}"
    )


def _size(params: float, lo: float, hi: float) -> float:
    if hi <= lo:
        return 18.0
    return 10.0 + 26.0 * math.sqrt((params - lo) / (hi - lo))


def _test_text(score: float | None) -> str:
    """The test score as shown in tables and hover text."""
    return "not recorded" if score is None else f"{score:.4f}"


def _scores_hover(t: Any) -> str:
    return f"{VAL_LABEL} {t.score:.4f} (selected on)<br>{TEST_LABEL} {_test_text(t.test_score)}"


def human_size(size_bytes: int | None) -> str:
    """``"12.3 KiB"``-style size; ``""`` when not recorded."""
    if size_bytes is None:
        return ""
    size = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _is_int8(t: Any) -> bool:
    return bool(getattr(t, "quantized", False))


def _precision_hover(t: Any) -> str:
    """The hover line of an int8 trial (empty for a float one)."""
    if not _is_int8(t):
        return ""
    mode = getattr(getattr(t, "quantize", None), "mode", "")
    size = human_size(getattr(t, "size_bytes", None))
    return f"<br>int8 ({mode})" + (f", {size}" if size else "")


def _staircase(trials: list[Any]) -> list[Any]:
    """The trials no other one beats on both validation score and latency, fastest first."""
    out: list[Any] = []
    for t in sorted(trials, key=lambda t: (t.latency_ms, -t.score)):
        if not out or t.score > out[-1].score:
            out.append(t)
    return out


def _front_line(trials: list[Any], name: str, style: dict[str, Any]) -> go.Scatter:
    line = _staircase(trials)
    return go.Scatter(
        x=[t.latency_ms for t in line],
        y=[t.score for t in line],
        mode="lines",
        name=name,
        line={"width": 1.5, "shape": "hv", **style},
        hoverinfo="skip",
    )


def front_figure(front: Any, *, highlight: int | None = None) -> go.Figure:
    """Validation score against latency: every trial (grey), the front (sized by params),
    the dense model; the hover text of each point gives its test score too.

    int8 trials are one trace, ``"int8"`` (diamonds; on the front: sized and coloured as
    the front, else grey); a study with float and int8 trials also gets the two front
    lines ``"front, float only"`` and ``"front, float + int8"``."""
    fig = go.Figure()
    everything = [t for t in front.completed]
    all_params = [t.params for t in everything] + (
        [front.baseline.params] if front.baseline else []
    )
    lo, hi = (min(all_params), max(all_params)) if all_params else (0, 0)
    on_front = {t.number for t in front.trials}
    int8 = [t for t in everything if _is_int8(t)]
    floats = [t for t in everything if not _is_int8(t)]
    others = [t for t in floats if t.number not in on_front]
    if others:
        fig.add_trace(
            go.Scatter(
                x=[t.latency_ms for t in others],
                y=[t.score for t in others],
                mode="markers",
                name="other trials",
                marker={"color": "rgba(140,140,140,0.45)", "size": 7, "symbol": _FLOAT_SYMBOL},
                text=[
                    f"trial {t.number}<br>{_scores_hover(t)}<br>{t.params:,} params" for t in others
                ],
                hovertemplate="%{text}<br>%{x:.3f} ms<extra></extra>",
            )
        )
    trials = sorted(front.trials, key=lambda t: t.latency_ms)
    if trials and int8 and floats:
        fig.add_trace(
            _front_line(
                [t for t in front.front_of(quantized=False)],
                FLOAT_FRONT_TRACE,
                {"color": "#7f7f7f", "dash": "dash"},
            )
        )
        fig.add_trace(
            _front_line(front.score_latency_front(), JOINT_FRONT_TRACE, {"color": "#1f77b4"})
        )
    elif trials:
        fig.add_trace(
            _front_line(front.score_latency_front(), "score/latency front", {"color": "#1f77b4"})
        )
    float_members = [t for t in trials if not _is_int8(t)]
    if float_members:
        fig.add_trace(
            go.Scatter(
                x=[t.latency_ms for t in float_members],
                y=[t.score for t in float_members],
                mode="markers",
                name=f"Pareto front ({', '.join(front.objectives)}); size: params",
                marker={
                    "size": [_size(t.params, lo, hi) for t in float_members],
                    "color": "#1f77b4",
                    "symbol": _FLOAT_SYMBOL,
                    "line": {"color": "white", "width": 1},
                },
                text=[_member_hover(front, t) for t in float_members],
                hovertemplate="%{text}<br>%{x:.3f} ms<extra></extra>",
            )
        )
    if int8:
        members = [t.number in on_front for t in int8]
        fig.add_trace(
            go.Scatter(
                x=[t.latency_ms for t in int8],
                y=[t.score for t in int8],
                mode="markers",
                name=INT8_TRACE,
                marker={
                    "symbol": [_INT8_SYMBOL] * len(int8),
                    "size": [
                        _size(t.params, lo, hi) if m else 9.0
                        for t, m in zip(int8, members, strict=True)
                    ],
                    "color": ["#9467bd" if m else "rgba(148,103,189,0.4)" for m in members],
                    "line": {"color": "white", "width": 1},
                },
                text=[
                    _member_hover(front, t) + "<br>on the front"
                    if m
                    else f"trial {t.number}<br>{_scores_hover(t)}<br>{t.params:,} params"
                    + _precision_hover(t)
                    for t, m in zip(int8, members, strict=True)
                ],
                hovertemplate="%{text}<br>%{x:.3f} ms<extra></extra>",
            )
        )
    if highlight is not None and highlight in {t.number for t in everything}:
        t = front.trial(highlight)
        fig.add_trace(
            go.Scatter(
                x=[t.latency_ms],
                y=[t.score],
                mode="markers",
                name=f"trial {t.number} (shown below)",
                marker={
                    "symbol": _INT8_SYMBOL if _is_int8(t) else _FLOAT_SYMBOL,
                    "size": _size(t.params, lo, hi) + 8,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": "#d62728", "width": 3},
                },
                hoverinfo="skip",
            )
        )
    if front.baseline is not None:
        b = front.baseline
        fig.add_trace(
            go.Scatter(
                x=[b.latency_ms],
                y=[b.score],
                mode="markers+text",
                name="dense model",
                marker={
                    "symbol": "star",
                    "size": _size(b.params, lo, hi) + 4,
                    "color": "#ff7f0e",
                    "line": {"color": "black", "width": 1},
                },
                text=["dense"],
                textposition="top center",
                hovertemplate=(
                    f"dense model<br>{_scores_hover(b)}<br>{b.params:,} params, "
                    f"{b.macs:,} MACs<br>"
                    "%{x:.3f} ms<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title=f"Pareto front of study {front.study_name} ({front.backend} latency)",
        xaxis_title="latency, median (ms)",
        yaxis_title="val score: validation split, selected on (higher is better)",
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"t": 90},
        height=520,
    )
    return fig


def _member_hover(front: Any, t: Any) -> str:
    """Hover text of a trial on the front."""
    speed = front.speedup(t)
    return (
        f"trial {t.number}<br>{_scores_hover(t)}<br>{t.params:,} params, {t.macs:,} MACs"
        + (f"<br>{speed:.2f}x faster" if speed else "")
        + _precision_hover(t)
    )


def widths_figure(front: Any, number: int) -> go.Figure:
    """Per-group widths of trial ``number``: the original and the kept units."""
    t = front.trial(number)
    widths = dict(t.plan.widths)
    names = list(widths)
    original = [int(widths[n][0]) for n in names]
    kept = [int(widths[n][1]) for n in names]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=original, name="original", marker_color="#c7d7ea"))
    fig.add_trace(
        go.Bar(
            x=names,
            y=kept,
            name="kept",
            marker_color="#1f77b4",
            text=[f"{k}/{o}" for k, o in zip(kept, original, strict=False)],
            textposition="outside",
            hovertemplate="%{x}<br>kept %{y} units<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Kept width per group, trial {t.number} ({VAL_LABEL} {t.score:.4f}, "
        f"{TEST_LABEL} {_test_text(t.test_score)}, {t.latency_ms:.3f} ms, {t.params:,} params)",
        barmode="overlay",
        yaxis_title="units (channels / neurons / heads)",
        template="plotly_white",
        height=max(420, 320 + 6 * len(names)),
        xaxis={"tickangle": -45, "automargin": True},
    )
    return fig


def _is_supernet(front: Any) -> bool:
    return getattr(front, "kind", "prune") == "supernet"


def _arch_value(value: Any) -> str:
    if isinstance(value, bool):
        return "kept" if value else "dropped"
    return str(value)


def _arch_cell(arch: Any) -> str:
    """A trial's sub-network, folded: a summary line, every choice when opened."""
    if not arch:
        return "<td class='arch'></td>"
    widths = [k for k, v in arch.items() if not isinstance(v, bool)]
    dropped = [k for k, v in arch.items() if v is False]
    summary = (
        f"{len(widths)} width{'' if len(widths) == 1 else 's'}, {len(dropped)} "
        f"block{'' if len(dropped) == 1 else 's'} dropped"
    )
    body = "<br>".join(
        f"{html.escape(str(k))} = {html.escape(_arch_value(v))}" for k, v in arch.items()
    )
    return f"<td class='arch'><details><summary>{summary}</summary>{body}</details></td>"


def _arch_table(front: Any, number: int) -> str:
    """Every choice of trial ``number``'s sub-network, one row each."""
    arch = front.trial(number).arch or {}
    rows = "".join(
        f"<tr><td class='name'>{html.escape(str(k))}</td>"
        f"<td>{'depth' if isinstance(v, bool) else 'width'}</td>"
        f"<td>{html.escape(_arch_value(v))}</td></tr>"
        for k, v in arch.items()
    )
    return (
        "<table class='archtable'><thead><tr><th>choice</th><th>kind</th>"
        "<th>value (units kept, or block kept)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _has_int8(front: Any) -> bool:
    return any(_is_int8(t) for t in front.completed)


def _table(front: Any, highlight: int | None) -> str:
    supernet = _is_supernet(front)
    precision = _has_int8(front)
    head: tuple[str, ...] = (
        ("trial", VAL_LABEL, TEST_LABEL)
        + (("precision", "size") if precision else ())
        + ("latency ms", "p90 ms", "speedup", "params", "MACs")
        + (("sub-network (arch)",) if supernet else ())
    )
    rows = []
    if front.baseline is not None:
        b = front.baseline
        rows.append(
            "<tr class='dense'><td>dense</td>"
            f"<td>{b.score:.4f}</td><td class='test'>{_test_text(b.test_score)}</td>"
            + (
                f"<td class='precision'>float</td><td>{human_size(b.size_bytes)}</td>"
                if precision
                else ""
            )
            + f"<td>{b.latency_ms:.3f}</td><td>{b.latency_p90_ms:.3f}</td>"
            f"<td>1.00x</td><td>{b.params:,}</td><td>{b.macs:,}</td>"
            + ("<td class='arch'>largest</td>" if supernet else "")
            + "</tr>"
        )
    for row, t in zip(front.rows(), front.trials, strict=True):
        cls = " class='chosen'" if row["trial"] == highlight else ""
        speed = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        rows.append(
            f"<tr{cls}><td>{row['trial']}</td><td>{row['score']:.4f}</td>"
            f"<td class='test'>{_test_text(row['test_score'])}</td>"
            + (
                f"<td class='precision'>{html.escape(_precision_cell(t))}</td>"
                f"<td>{human_size(row['size_bytes'])}</td>"
                if precision
                else ""
            )
            + f"<td>{row['latency_ms']:.3f}</td><td>{row['latency_p90_ms']:.3f}</td>"
            f"<td>{speed}</td><td>{row['params']:,}</td><td>{row['macs']:,}</td>"
            + (_arch_cell(t.arch) if supernet else "")
            + "</tr>"
        )
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _precision_cell(t: Any) -> str:
    """``float``, ``int8 (static)``, or for a per-stage choice ``int8 (static; 1 of 3
    stages float)``."""
    if not _is_int8(t):
        return "float"
    mode = getattr(t.quantize, "mode", "")
    stages = {k: v for k, v in (t.precision or {}).items() if k != "*"}
    kept = sum(v == "float" for v in stages.values())
    detail = f"; {kept} of {len(stages)} stages float" if kept else ""
    return f"int8 ({mode}{detail})"


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
p.meta { color: #555; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
tr.dense td { color: #888; } tr.chosen td { background: #fdecea; font-weight: 600; }
td.test { color: #2c6e2c; } td.precision { text-align: left; }
td.arch, td.name { text-align: left; font-size: 0.8rem; }
p.supernet { background: #eef4fb; border-left: 4px solid #1f77b4; padding: 0.5rem 0.8rem; }
p.note { color: #444; font-size: 0.9rem; }
"""


def report(
    front_or_study: Any,
    path: str | os.PathLike[str],
    *,
    trial: int | None = None,
) -> Path:
    """Write the HTML report of a search to ``path`` and return the path.

    Args:
        front_or_study: a :class:`netsculpt.Front` or the ``optuna.Study`` of a search.
        path: the HTML file to write (its folder is created).
        trial: the trial whose per-group widths are drawn; None for the knee of the front.

    Raises:
        SearchError: the study has no completed trial, or ``trial`` is not one of them.
    """
    front = _as_front(front_or_study)
    if not front.completed:
        raise SearchError(
            f"study {front.study_name!r} has no completed trial to report on; run the search "
            f"first (ns.search or `netsculpt search`)"
        )
    chosen = front.knee().number if trial is None else front.trial(trial).number
    fig_front = front_figure(front, highlight=chosen)
    fig_widths = widths_figure(front, chosen)
    div_front = pio.to_html(
        fig_front,
        include_plotlyjs=True,
        full_html=False,
        div_id="netsculpt-front",
        config={"displaylogo": False},
    )
    div_widths = pio.to_html(
        fig_widths,
        include_plotlyjs=False,
        full_html=False,
        div_id="netsculpt-widths",
        config={"displaylogo": False},
    )
    base = front.baseline
    meta = [
        (
            f"{len(front.completed)} completed trials, {len(front.failed)} failed, "
            f"{len(front.trials)} on the Pareto front of {', '.join(front.objectives)}"
        ),
        f"latency backend: {front.backend}",
    ]
    if base is not None:
        meta.append(
            f"dense model: {VAL_LABEL} {base.score:.4f}, {TEST_LABEL} "
            f"{_test_text(base.test_score)}, {base.latency_ms:.3f} ms median, "
            f"{base.params:,} params, {base.macs:,} MACs"
        )
    missing = sum(t.test_score is None for t in front.completed)
    if missing:
        meta.append(
            f"{TEST_LABEL}: not recorded for {missing} of {len(front.completed)} completed "
            f"trials (a study from before test scores, test_scores=False, a task whose "
            f"evaluate takes no split, or a failed test evaluation: see the trial's "
            f"test_fail_reason)"
        )
    n_int8 = sum(_is_int8(t) for t in front.completed)
    if n_int8:
        modes = sorted({t.quantize.mode for t in front.completed if _is_int8(t)})
        meta.append(
            f"precision: {n_int8} of {len(front.completed)} completed trials ran int8 "
            f"({', '.join(modes)} quantization, scored and timed as ONNX models in "
            f"onnxruntime); diamonds mark them"
        )
    if front.constraints:
        meta.append("constraints: " + ", ".join(f"{k}={v}" for k, v in front.constraints.items()))
    supernet = _is_supernet(front)
    banner = ""
    arch_section = ""
    if supernet:
        banner = f"<p class='supernet'>{html.escape(SUPERNET_LINE)}. {_supernet_detail(front)}</p>"
        arch_section = (
            f"<h2>Sub-network (arch) of trial {chosen}</h2>\n{_arch_table(front, chosen)}\n"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = html.escape(front.study_name)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>netsculpt report: {name}</title>
<style>{_CSS}</style></head>
<body>
<h1>netsculpt search report: {name}</h1>
{banner}
<p class="meta">{"<br>".join(html.escape(m) for m in meta)}<br>written {stamp}</p>
<h2>Pareto front (selected on the validation split)</h2>
<p class="note">{html.escape(_NOTE)}</p>
{div_front}
<h2>Trials on the front: {VAL_LABEL} (selected on) and {TEST_LABEL} (reported)</h2>
{_table(front, chosen)}
<h2>Kept widths of trial {chosen}{" (knee of the front)" if trial is None else ""}</h2>
{div_widths}
{arch_section}</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
