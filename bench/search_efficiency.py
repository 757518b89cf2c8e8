"""How fast does each search find a good front? Hypervolume against evaluated trials.

On the built-in ``digits`` task (the small CNN trained on scikit-learn's digits), three
searches run on the same search space (keep ratio per stage, importance criterion,
``round_to``), each trial recovered by a short distillation (``--recover`` steps) before it
is scored:

* ``random``: Optuna's RandomSampler, ``--trials`` trials;
* ``nsga2``: NSGA-II (netsculpt's default), ``--trials`` trials;
* ``nsga2+predictor``: NSGA-II whose candidates are screened by a random-forest surrogate
  trained on the finished trials (``ns.search(predictor=True)``), ``--predictor-trials``.

The objectives are validation accuracy (maximised) and MACs (minimised). MACs rather than
measured latency keep the comparison about the optimisers: on a machine shared with other
jobs, timing noise would move the fronts more than the samplers do.

Validation selects, test reports. After k trials, the front is chosen on the validation
split: the trials no other of the first k beats on (validation accuracy, MACs). The
reported hypervolume is that of the same trials placed at their **test** accuracy: the
area they dominate in the plane (MACs / dense MACs, test accuracy), bounded by the
reference point (dense MACs, accuracy 0); 1.0 would be a perfect model at zero cost. The
test split never chooses a trial; the validation hypervolume (what the samplers optimise)
is kept in the JSON as ``val_curve``.

The target: NSGA-II with the predictor reaches, within 50 trials, the hypervolume random
search reaches after 200 (mean over ``--seeds`` seeds).

Run ``python bench/search_efficiency.py`` (about 40 minutes on two busy cores) or
``--quick`` (1 seed, 30/30/20 trials, a smoke test). The table is printed and written to
``bench/results/search_efficiency.md`` (+ ``.json`` and, when plotly can render offline,
``search_efficiency.png``).
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

import netsculpt as ns
from netsculpt.studies import Predictor, StudyConfig
from netsculpt.studies._pareto import hypervolume, pareto_mask

RESULTS = Path(__file__).parent / "results"
TARGET_TRIALS = 50
BASELINE_TRIALS = 200
METHODS = ("random", "nsga2", "nsga2+predictor")
console = Console()
app = typer.Typer(add_completion=False)


def hv_curves(
    trials: list[Any], dense_macs: int, checkpoints: list[int]
) -> tuple[dict[int, float], dict[int, float]]:
    """``(test, validation)`` hypervolume of the first k trials (by number), per checkpoint k.

    The front of the first k trials is selected on (validation accuracy, MACs); the test
    hypervolume places those selected trials at their test accuracy (the reported figure),
    the validation one at their validation accuracy (what the search optimised).
    """
    ordered = sorted(trials, key=lambda t: t.number)
    val_points: list[tuple[float, float] | None] = []
    test_points: list[tuple[float, float] | None] = []
    for t in ordered:
        if t.state.name == "COMPLETE" and "score" in t.user_attrs:
            if "test_score" not in t.user_attrs:
                raise RuntimeError(
                    f"trial {t.number} recorded no test score (test_fail_reason: "
                    f"{t.user_attrs.get('test_fail_reason')!r}); the benchmark reports test "
                    f"accuracy, so every trial must have one"
                )
            cost = float(t.user_attrs["macs"]) / dense_macs
            val_points.append((-float(t.user_attrs["score"]), cost))
            test_points.append((-float(t.user_attrs["test_score"]), cost))
        else:
            val_points.append(None)
            test_points.append(None)
    reference = np.array([0.0, 1.0])
    test_curve, val_curve = {}, {}
    for k in checkpoints:
        done = [i for i in range(min(k, len(ordered))) if val_points[i] is not None]
        if not done:
            test_curve[k] = val_curve[k] = 0.0
            continue
        val = np.array([val_points[i] for i in done])
        selected = [done[j] for j in np.flatnonzero(pareto_mask(val))]  # on validation only
        val_curve[k] = hypervolume(val, reference)
        test_curve[k] = hypervolume(np.array([test_points[i] for i in selected]), reference)
    return test_curve, val_curve


def run_one(
    method: str,
    seed: int,
    n_trials: int,
    recover: int,
    folder: Path,
    model: Any,
    x: Any,
    task: Any,
) -> dict[str, Any]:
    started = time.perf_counter()
    front = ns.search(
        model,
        x,
        task=task,
        n_trials=n_trials,
        storage=f"sqlite:///{folder / f'{method}-{seed}.db'}",
        study_name=f"{method}-{seed}",
        sampler="random" if method == "random" else "nsga2",
        predictor=Predictor() if method.endswith("predictor") else False,
        progress=False,
        config=StudyConfig(
            objectives=("score", "macs"),
            seed=seed,
            recover_budget=recover,
            measure_options={"warmup": 0, "repeats": 1, "memory": False},
        ),
    )
    seconds = time.perf_counter() - started
    assert front.baseline is not None
    checkpoints = sorted(
        {k for k in (10, 20, 30, 40, 50, 75, 100, 150, 200, n_trials) if k <= n_trials}
    )
    curve, val_curve = hv_curves(
        front.study.trials, front.baseline.macs, list(range(1, n_trials + 1))
    )
    return {
        "method": method,
        "seed": seed,
        "n_trials": n_trials,
        "seconds": seconds,
        "curve": {str(k): curve[k] for k in curve},  # test accuracy of the validation front
        "val_curve": {str(k): val_curve[k] for k in val_curve},
        "checkpoints": checkpoints,
        "front": [
            {"trial": t.number, "val_score": t.score, "test_score": t.test_score, "macs": t.macs}
            for t in front.trials
        ],
        "dense": {
            "val_score": front.baseline.score,
            "test_score": front.baseline.test_score,
            "macs": front.baseline.macs,
        },
    }


def first_reaching(curve: dict[str, float], target: float) -> int | None:
    for k in sorted(curve, key=int):
        if curve[k] >= target - 1e-12:
            return int(k)
    return None


def summarise(runs: list[dict[str, Any]], trials: int, predictor_trials: int) -> dict[str, Any]:
    by_method: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for r in runs:
        by_method[r["method"]].append(r)
    ks = sorted(
        {k for k in (10, 20, 30, 40, 50, 75, 100, 150, 200) if k <= trials}
        | {trials, predictor_trials}
    )
    table: dict[str, dict[int, tuple[float, float] | None]] = {}
    for m, rs in by_method.items():
        table[m] = {}
        for k in ks:
            vals = [r["curve"][str(k)] for r in rs if str(k) in r["curve"]]
            table[m][k] = (statistics.mean(vals), statistics.pstdev(vals)) if vals else None
    ref_k = min(BASELINE_TRIALS, trials)
    random_ref = table["random"][ref_k]
    reach: dict[str, list[int | None]] = {}
    if random_ref is not None:
        for m in METHODS:
            reach[m] = [first_reaching(r["curve"], random_ref[0]) for r in by_method[m]]
    mean_curves = {}
    for m, rs in by_method.items():
        if rs:
            n = min(len(r["curve"]) for r in rs)
            mean_curves[m] = [
                statistics.mean(r["curve"][str(k)] for r in rs) for k in range(1, n + 1)
            ]
    pred_reach_mean = None
    mc = mean_curves.get("nsga2+predictor")
    if mc and random_ref is not None:
        pred_reach_mean = next(
            (i + 1 for i, v in enumerate(mc) if v >= random_ref[0] - 1e-12), None
        )
    return {
        "ks": ks,
        "table": table,
        "reference_k": ref_k,
        "random_reference": None if random_ref is None else random_ref[0],
        "reach": reach,
        "mean_curves": mean_curves,
        "predictor_reaches_mean_at": pred_reach_mean,
        "seconds": {
            m: statistics.mean(r["seconds"] for r in rs) for m, rs in by_method.items() if rs
        },
    }


def render(summary: dict[str, Any], args: dict[str, Any]) -> tuple[Table, str]:
    ks = summary["ks"]
    table = Table(
        title="Test hypervolume (test accuracy vs MACs of the front selected on validation) "
        "after k trials, mean ± std over seeds"
    )
    table.add_column("method")
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    table.add_column("s / run", justify="right")
    md_rows = []
    for m in METHODS:
        cells = []
        for k in ks:
            v = summary["table"][m].get(k)
            cells.append("" if v is None else f"{v[0]:.4f} ± {v[1]:.4f}")
        secs = summary["seconds"].get(m)
        table.add_row(m, *cells, "" if secs is None else f"{secs:.0f}")
        secs_text = "" if secs is None else f"{secs:.0f}"
        md_rows.append(f"| {m} | " + " | ".join(cells) + f" | {secs_text} |")
    ref = summary["random_reference"]
    reach = summary["reach"]
    lines = [
        "# Search efficiency on the digits task",
        "",
        (
            f"Test hypervolume after k evaluated trials: the front of the first k trials is "
            f"selected on (validation accuracy, MACs), and the hypervolume is that of the same "
            f"trials at their test accuracy in the plane (MACs / dense MACs, test accuracy); "
            f"reference point (1.0, 0.0). The test split chooses nothing. Each trial is "
            f"recovered by a {args['recover']}-step "
            f"distillation before scoring. Seeds: {args['seeds']}. Machine: "
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s). Run: {args['date']}."
        ),
        "",
        "| method | " + " | ".join(f"k={k}" for k in ks) + " | seconds / run |",
        "|---" * (len(ks) + 2) + "|",
        *md_rows,
        "",
    ]
    if ref is not None:
        lines.append(
            f"Random search after {summary['reference_k']} trials (mean): "
            f"test hypervolume **{ref:.4f}**."
        )
        lines.append("")
        lines.append("Trials each run needed to reach it (per seed; `-` = not within its budget):")
        lines.append("")
        for m in METHODS:
            vals = reach.get(m, [])
            lines.append(f"- {m}: " + ", ".join("-" if v is None else str(v) for v in vals))
        pm = summary["predictor_reaches_mean_at"]
        verdict = (
            f"the mean curve of NSGA-II + predictor reaches it after **{pm}** trials"
            if pm is not None
            else "the mean curve of NSGA-II + predictor does not reach it "
            f"within {args['predictor_trials']} trials"
        )
        met = pm is not None and pm <= TARGET_TRIALS
        lines += [
            "",
            (f"Target (<= {TARGET_TRIALS} trials): {verdict}: **{'met' if met else 'not met'}**."),
        ]
    return table, "\n".join(lines) + "\n"


def figure(summary: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = {"random": "#7f7f7f", "nsga2": "#1f77b4", "nsga2+predictor": "#d62728"}
    for m, curve in summary["mean_curves"].items():
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(curve) + 1)),
                y=curve,
                mode="lines",
                name=m,
                line={"color": colours[m], "width": 2},
            )
        )
    if summary["random_reference"] is not None:
        fig.add_hline(
            y=summary["random_reference"],
            line_dash="dash",
            line_color="#7f7f7f",
            annotation_text=f"random @ {summary['reference_k']}",
        )
    fig.add_vline(x=TARGET_TRIALS, line_dash="dot", line_color="#d62728")
    fig.update_layout(
        title="Search efficiency on digits: hypervolume vs evaluated trials (mean over seeds)",
        xaxis_title="evaluated trials",
        yaxis_title="test hypervolume (validation-selected front)",
        template="plotly_white",
    )
    return fig


@app.command()
def main(
    seeds: Annotated[int, typer.Option(help="seeds per method")] = 3,
    trials: Annotated[int, typer.Option(help="trials of random and NSGA-II")] = BASELINE_TRIALS,
    predictor_trials: Annotated[int, typer.Option(help="trials of NSGA-II + predictor")] = 100,
    recover: Annotated[int, typer.Option(help="distillation steps per trial")] = 30,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    quick: Annotated[bool, typer.Option(help="smoke test: 1 seed, 30/30/20 trials")] = False,
    out: Annotated[Path, typer.Option(help="results folder")] = RESULTS,
) -> None:
    """Test hypervolume of validation-selected fronts vs trials: random, NSGA-II, NSGA-II +
    predictor on digits."""
    if quick:
        seeds, trials, predictor_trials = 1, 30, 20
    torch.set_num_threads(threads)
    task = ns.get_task("digits")
    model = task.pretrained_model()
    x = task.example_inputs()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="netsculpt-bench-") as tmp:
        for seed in range(seeds):
            for method in METHODS:
                n = predictor_trials if method.endswith("predictor") else trials
                console.print(f"[bold]{method}[/bold] seed {seed}: {n} trials")
                run = run_one(method, seed, n, recover, Path(tmp), model, x, task)
                runs.append(run)
                console.print(
                    f"  test hypervolume {run['curve'][str(n)]:.4f} (validation "
                    f"{run['val_curve'][str(n)]:.4f}) in {run['seconds']:.0f} s"
                )
    summary = summarise(runs, trials, predictor_trials)
    args = {
        "seeds": seeds,
        "recover": recover,
        "predictor_trials": predictor_trials,
        "date": time.strftime("%Y-%m-%d"),
    }
    table, markdown = render(summary, args)
    console.print(table)
    console.print(markdown)
    name = "search_efficiency_quick" if quick else "search_efficiency"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"runs": runs, "args": args}, indent=1))
    from netsculpt.reporting.png import write_png

    png = write_png(figure(summary), out / f"{name}.png")
    if png is not None:
        markdown += f"\n![hypervolume vs trials]({png.name})\n"
    (out / f"{name}.md").write_text(markdown)
    console.print(f"written {out / f'{name}.md'}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    app()
