"""The live display: counts, front size and best score per latency band, read from the study."""

from __future__ import annotations

import io

import optuna
from rich.console import Console

from netsculpt.studies.progress import LATENCY_BANDS, SearchProgress, render, summarise


def _study() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("netsculpt:objectives", ["score", "latency_ms"])
    study.set_user_attr("netsculpt:baseline", {"score": 0.9, "latency_ms": 10.0})
    for score, latency in [(0.5, 3.0), (0.7, 4.5), (0.6, 6.0), (0.85, 9.0), (0.8, 12.0)]:
        trial = study.ask()
        trial.set_user_attr("score", score)
        trial.set_user_attr("latency_ms", latency)
        study.tell(trial, [score, latency])
    failed = study.ask()
    failed.set_user_attr("fail_reason", "task.evaluate failed: boom")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.ask()  # still running
    return study


def test_summary_counts_front_and_bands() -> None:
    summary = summarise(_study(), n_trials=10)
    assert summary["done"] == 6 and summary["complete"] == 5
    assert summary["failed"] == 1 and summary["running"] == 1
    assert summary["front"] == 3  # (0.5, 3), (0.7, 4.5), (0.85, 9)
    bands = {b["band"]: b for b in summary["bands"]}
    assert len(bands) == len(LATENCY_BANDS)
    assert bands[(0.0, 0.5)]["best_score"] == 0.7 and bands[(0.0, 0.5)]["trial"] == 1
    assert bands[(0.5, 0.67)]["best_score"] == 0.6
    assert bands[(0.8, 1.0)]["best_score"] == 0.85
    assert bands[(1.0, float("inf"))]["count"] == 1


def test_render_and_live_display() -> None:
    study = _study()
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(render(summarise(study, 10), 12.0, study.study_name))
    text = console.export_text()
    assert "6/10 trials done" in text and "front: 3" in text
    assert "<= 0.50x" in text and "0.7000" in text
    sink = Console(file=io.StringIO(), width=120, force_terminal=True)
    with SearchProgress(study, 10, console=sink, min_interval=0.0) as progress:
        progress.callback(study, study.trials[0])
    assert "trials done" in sink.file.getvalue()  # type: ignore[attr-defined]
    quiet = SearchProgress(study, 10, enabled=False)
    with quiet:
        quiet.refresh()  # a disabled display does nothing
