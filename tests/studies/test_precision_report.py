"""The HTML report of a precision search: int8 trials marked, the fronts with and without
int8, and the precision and size columns; a float study renders as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from precision_helpers import AgreementTask
from search_helpers import FAST_MEASURE, search_with, tiny_mlp

from netsculpt.reporting.html import front_figure, human_size, report
from netsculpt.studies import SearchSpace
from netsculpt.studies.front import Front

SPACE = dict(tie="uniform", step=0.25, min_keep=0.5, importance=("magnitude",), round_to=(1,))


def _search(storage: Path, *, precision: tuple[str, ...], n_trials: int, seed: int) -> Front:
    model, x = tiny_mlp()
    return search_with(
        model,
        x,
        task=AgreementTask(),
        storage=str(storage),
        n_trials=n_trials,
        sampler="random",
        progress=False,
        backend="onnxruntime" if "int8" in precision else "torch",
        recover_budget=None,
        measure_options=FAST_MEASURE,
        seed=seed,
        space=SearchSpace(**SPACE, precision=precision),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def joint(tmp_path_factory: pytest.TempPathFactory) -> Front:
    storage = tmp_path_factory.mktemp("precision-report") / "study.db"
    front = _search(storage, precision=("float", "int8"), n_trials=8, seed=3)
    kinds = {t.quantized for t in front.completed}
    assert kinds == {False, True}, "the fixture study needs float and int8 trials"
    return front


def _staircase(trials: list) -> list[tuple[float, float]]:  # type: ignore[type-arg]
    """(latency, score) of the trials no other beats on both, fastest first."""
    out: list[tuple[float, float]] = []
    for t in sorted(trials, key=lambda t: (t.latency_ms, -t.score)):
        if not out or t.score > out[-1][1]:
            out.append((t.latency_ms, t.score))
    return out


def test_figure_marks_int8_trials_and_draws_both_fronts(joint: Front) -> None:
    fig = front_figure(joint)
    by_name = {trace.name: trace for trace in fig.data}
    assert {"int8", "front, float only", "front, float + int8"} <= set(by_name)
    assert "score/latency front" not in by_name
    int8 = [t for t in joint.completed if t.quantized]
    marks = by_name["int8"]
    assert len(marks.x) == len(int8)
    assert list(marks.marker.symbol) == ["diamond"] * len(int8)
    assert sorted(zip(marks.x, marks.y, strict=True)) == sorted(
        (t.latency_ms, t.score) for t in int8
    )
    # no other trace holds a diamond, and every trial is drawn once
    points = [
        trace
        for trace in fig.data
        if trace.name in ("other trials", "int8") or trace.name.startswith("Pareto front")
    ]
    assert sum(len(trace.x) for trace in points) == len(joint.completed)
    assert all(trace.marker.symbol == "circle" for trace in points if trace.name != "int8")
    floats = joint.front_of(quantized=False)
    assert all(not t.quantized for t in floats)
    line = by_name["front, float only"]
    assert list(zip(line.x, line.y, strict=True)) == _staircase(floats)
    line = by_name["front, float + int8"]
    assert list(zip(line.x, line.y, strict=True)) == [
        (t.latency_ms, t.score) for t in joint.score_latency_front()
    ]
    # the highlighted int8 trial is ringed with its own symbol
    chosen = int8[0]
    ring = next(t for t in front_figure(joint, highlight=chosen.number).data if "shown" in t.name)
    assert ring.marker.symbol == "diamond"


def test_report_table_has_precision_and_size(joint: Front, tmp_path: Path) -> None:
    page = report(joint, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<th>precision</th><th>size</th>" in page
    head = page[page.index("<th>trial</th>") : page.index("</thead>")]
    assert head.index("precision") < head.index("latency ms")
    int8_on_front = [t for t in joint.trials if t.quantized]
    assert page.count("<td class='precision'>int8 (static)</td>") == len(int8_on_front)
    float_rows = len(joint.trials) - len(int8_on_front) + (joint.baseline is not None)
    assert page.count("<td class='precision'>float</td>") == float_rows
    for t in joint.trials:
        assert t.size_bytes is not None
        assert f"<td>{human_size(t.size_bytes)}</td>" in page
    n = sum(t.quantized for t in joint.completed)
    assert f"precision: {n} of {len(joint.completed)} completed trials ran int8" in page


def test_human_size() -> None:
    assert human_size(None) == ""
    assert human_size(512) == "512 B"
    assert human_size(2048) == "2.0 KiB"
    assert human_size(5 * 2**20 + 2**19) == "5.5 MiB"
    assert human_size(3 * 2**30) == "3.0 GiB"


def test_float_study_renders_as_before(tmp_path: Path) -> None:
    front = _search(tmp_path / "float.db", precision=("float",), n_trials=3, seed=0)
    names = [trace.name for trace in front_figure(front).data]
    assert "score/latency front" in names
    assert not {"int8", "front, float only", "front, float + int8"} & set(names)
    page = report(front, tmp_path / "float.html").read_text(encoding="utf-8")
    assert "<th>precision</th>" not in page and "<th>size</th>" not in page
    assert "ran int8" not in page
