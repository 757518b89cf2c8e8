"""ns.report: a self-contained HTML page that renders in a real (headless) browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import optuna
import pytest

import netsculpt as ns
from netsculpt.errors import InputError, SearchError
from netsculpt.reporting.html import front_figure, report, widths_figure

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_is_self_contained(front, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = report(front, tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    page = path.read_text(encoding="utf-8")
    # plotly.js is inlined: no script is fetched from anywhere
    assert re.search(r"<script[^>]+src=", page) is None
    assert len(page) > 1_000_000 and "Plotly.newPlot" in page
    assert 'id="netsculpt-front"' in page and 'id="netsculpt-widths"' in page
    knee = front.knee()
    assert f"Kept widths of trial {knee.number} (knee of the front)" in page
    for t in front.trials:
        assert f"<td>{t.params:,}</td>" in page
    assert f"{len(front.completed)} completed trials, {len(front.failed)} failed" in page


def test_report_for_a_chosen_trial_and_from_a_study(front, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = next(t for t in front.completed if t.number != front.knee().number)
    page = report(front.study, tmp_path / "r.html", trial=other.number).read_text()
    assert f"Kept widths of trial {other.number}</h2>" in page
    with pytest.raises(SearchError, match="no completed trial 999"):
        report(front, tmp_path / "x.html", trial=999)
    with pytest.raises(InputError, match="Front"):
        report("front", tmp_path / "x.html")  # type: ignore[arg-type]


def test_figures_hold_the_front_the_baseline_and_the_widths(front) -> None:  # type: ignore[no-untyped-def]
    fig = front_figure(front)
    names = [trace.name for trace in fig.data]
    assert "dense model" in names and any(n.startswith("Pareto front") for n in names)
    dense = next(t for t in fig.data if t.name == "dense model")
    assert dense.x[0] == pytest.approx(front.baseline.latency_ms)
    on_front = next(t for t in fig.data if t.name.startswith("Pareto front"))
    assert sorted(on_front.y) == sorted(t.score for t in front.trials)
    # marker size grows with the parameter count
    by_params = sorted(
        zip(
            [t.params for t in sorted(front.trials, key=lambda t: t.latency_ms)],
            on_front.marker.size,
            strict=False,
        )
    )
    assert [s for _, s in by_params] == sorted(s for _, s in by_params)
    t = front.trials[0]
    bars = widths_figure(front, t.number)
    kept = next(b for b in bars.data if b.name == "kept")
    assert dict(zip(kept.x, kept.y, strict=False)) == {g: k for g, (_, k) in t.plan.widths.items()}


def test_empty_study_has_nothing_to_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'e.db'}", study_name="e")
    study.set_user_attr("netsculpt:objectives", ["score", "latency_ms"])
    with pytest.raises(SearchError, match="no completed trial"):
        ns.report(study, tmp_path / "e.html")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (.ci/system-deps.sh installs Debian's chromium)",
)
def test_report_renders_in_headless_chromium(front, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = report(front, tmp_path / "report.html")
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--window-size=1200,1600",
    ]
    url = path.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # plotly drew both figures as SVG: the front's scatter points and the width bars
    assert dom.count('class="main-svg"') >= 4  # two per figure (plot + hover layers)
    front_div = dom[dom.index('id="netsculpt-front"') : dom.index('id="netsculpt-widths"')]
    widths_div = dom[dom.index('id="netsculpt-widths"') :]
    assert "scatterlayer" in front_div
    # one point per completed trial, the dense star and the ring around the shown trial
    assert front_div.count('class="point"') >= len(front.completed) + 2
    knee = front.knee()
    assert widths_div.count('class="trace bars"') == 2  # original and kept
    assert widths_div.count('class="point"') == 2 * len(knee.plan.widths)
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    assert shot.stat().st_size > 20_000
