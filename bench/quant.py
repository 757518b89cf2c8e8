"""Quantization as a search dimension: pruning only, pruning then int8, and the joint search.

    python bench/quant.py --task mnist1d   # the residual 1-D CNN (static int8), 40 trials, 14 min
    python bench/quant.py --task minilm    # all-MiniLM-L6-v2 (dynamic int8), 8 trials, ~1 h
    python bench/quant.py --task digits --trials 12 --recover 30   # a tiny CNN, int8 slower
    python bench/quant.py --task mnist1d --quick    # a smoke run (writes nothing)

For one task, three fronts, each from the same number of trials (``--trials``):

* **(a) pruning only**: ``ns.search`` with ``SearchSpace(precision=("float",))``;
* **(b) pruning, then int8**: every member of front (a), rebuilt and quantized with
  ``ns.quantize`` (static for the CNN, calibration batches from the training split; dynamic,
  weights only, for MiniLM), then reduced to its own front on the validation score;
* **(c) joint**: ``ns.search`` with ``SearchSpace(precision=("float", "int8"))``: each trial
  chooses its structure and its precision; int8 trials are quantized, scored by running the
  quantized ONNX model and timed in onnxruntime inside the loop.

Both searches: objectives (validation score, onnxruntime latency), NSGA-II, seed 0, the
first trials the unpruned model in each precision (``start_from_largest=True``), each
trial recovered by ``--recover`` distillation steps from the dense model (150 for MNIST-1D,
where they are cheap; the search's default, 30, for MiniLM), one thread. Every selection
(the fronts, (b)'s front, the best trial at a speed-up) reads the **validation** score.
Then all front members, the dense float model and the dense int8 model are timed **side by
side** in one interleaved onnxruntime run (batch and sequence of the task's example inputs,
one thread; medians), and scored on the **test** split.

Reported: each front's hypervolume of (test score / dense test score, latency / dense
latency), reference point (0.5, 1.0), so 0.5 is the whole square; for each front the
validation-best member at >= 2x and >= 3x speed-up with its test score; sizes on disk and
the layers int8 left in float. The table is printed and written to
``bench/results/quant_<task>.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import netsculpt as ns
from netsculpt.measurement.api import compare_latency
from netsculpt.studies import SearchSpace, StudyConfig
from netsculpt.studies._pareto import hypervolume, pareto_mask

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)
REFERENCE = np.array([-0.5, 1.0])  # (minus score fraction, latency fraction)


def setup(name: str, quick: bool) -> tuple[Any, Any, Any, SearchSpace, ns.QuantizeConfig]:
    """Task, dense model, example inputs, the pruning space and the int8 options."""
    if name == "mnist1d":
        task = ns.get_task("mnist1d")
        space = SearchSpace(
            tie="stage",
            min_keep=0.25,
            step=0.125,
            importance=("magnitude", "lamp"),
            round_to=(1, 8),
        )
        quantize = ns.QuantizeConfig(mode="static", calib_batches=8)
    elif name == "digits":  # a tiny CNN on 8x8 images: where int8 is slower
        task = ns.get_task("digits")
        space = SearchSpace(
            tie="stage", min_keep=0.25, step=0.125, importance=("magnitude",), round_to=(1,)
        )
        quantize = ns.QuantizeConfig(mode="static", calib_batches=8)
    elif name == "minilm":
        task = ns.get_task("minilm") if not quick else ns.get_task("minilm", n_eval=64)
        space = SearchSpace(
            tie="stage",
            min_keep=0.375,
            step=0.125,
            importance=("activation",),
            round_to=(1,),
            calib_batches=2,
        )
        quantize = ns.QuantizeConfig(mode="dynamic")
    else:
        raise SystemExit(f"unknown task {name!r}: use mnist1d, minilm or digits")
    return task, task.pretrained_model().eval(), task.example_inputs(), space, quantize


def run_search(
    model: Any,
    x: Any,
    task: Any,
    space: SearchSpace,
    trials: int,
    storage: str,
    name: str,
    measure: dict[str, Any],
    recover: int,
) -> Any:
    config = StudyConfig(
        n_trials=trials,
        objectives=("score", "latency_ms"),
        sampler="nsga2",
        backend="onnxruntime",
        space=space,
        measure_options=measure,
        seed=0,
        recover_budget=recover,
        start_from_largest=True,
    )
    started = time.perf_counter()
    front = ns.search(
        model, x, task=task, config=config, storage=storage, study_name=name, progress=False
    )
    console.print(
        f"{name}: {len(front.completed)} trials, {len(front.trials)} on the front, "
        f"{time.perf_counter() - started:.0f} s"
    )
    return front, time.perf_counter() - started


def size_text(row: dict[str, Any]) -> str:
    if row.get("bytes") is None:
        return ""
    return f"{row['bytes'] / 1e3:.1f} kB (float {row['float_bytes'] / 1e3:.1f} kB)"


def fell_back(q: Any) -> list[str]:
    """The layers a quantized model left in float, each with the reason."""
    return [f"{c.node} ({c.op_type}): {c.reason}" for c in q.kept_float]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d", choices=("mnist1d", "minilm", "digits"))
    parser.add_argument("--trials", type=int, default=None, help="trials per search")
    parser.add_argument(
        "--recover",
        type=int,
        default=None,
        help="distillation steps per trial (default: 150 for mnist1d, 30 for minilm)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    parser.add_argument("--out", default=None, help="markdown file (default bench/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task, dense, x, space, quantize = setup(args.task, args.quick)
    trials = args.trials or (4 if args.quick else (40 if args.task == "mnist1d" else 8))
    measure = {"warmup": 2, "repeats": 10, "threads": 1, "memory": False}
    if args.task == "minilm":
        measure = {"warmup": 1, "repeats": 3, "threads": 1, "memory": False}
    recover = args.recover if args.recover is not None else (150 if args.task == "mnist1d" else 30)
    work = Path(tempfile.mkdtemp(prefix="netsculpt-bench-quant-"))
    storage = f"sqlite:///{work / 'studies.db'}"
    started = time.perf_counter()

    front_a, seconds_a = run_search(
        dense, x, task, space, trials, storage, f"{args.task}-prune", measure, recover
    )
    joint = SearchSpace(**{**space.__dict__, "precision": ("float", "int8"), "quantize": quantize})
    front_c, seconds_c = run_search(
        dense, x, task, joint, trials, storage, f"{args.task}-joint", measure, recover
    )

    # every candidate, built once: name -> (model for timing, validation score, test score)
    calib = list(task.calib_batches(quantize.calib_batches)) if quantize.mode == "static" else None
    candidates: dict[str, dict[str, Any]] = {}
    timed: dict[str, Any] = {"dense": dense}
    dense_q = ns.quantize(dense, x, quantize, calib=calib, path=work / "dense.int8.onnx")
    timed["dense int8"] = dense_q
    candidates["dense"] = {
        "front": "-",
        "val": task.evaluate(dense),
        "test": task.evaluate(dense, "test"),
        "bytes": None,
    }
    candidates["dense int8"] = {
        "front": "-",
        "val": task.evaluate(dense_q.as_module()),
        "test": task.evaluate(dense_q.as_module(), "test"),
        "bytes": dense_q.quantized_bytes,
        "float_bytes": dense_q.float_bytes,
        "fell_back": fell_back(dense_q),
    }
    for t in front_a.trials:
        small = t.model
        key = f"a{t.number}"
        timed[key] = small
        candidates[key] = {
            "front": "a",
            "trial": t.number,
            "val": t.score,
            "test": t.test_score,
            "params": t.params,
        }
        q = ns.quantize(small, x, quantize, calib=calib, path=work / f"b{t.number}.int8.onnx")
        runner = q.as_module()
        timed[f"b{t.number}"] = q
        candidates[f"b{t.number}"] = {
            "front": "b",
            "trial": t.number,
            "val": task.evaluate(runner),
            "test": task.evaluate(runner, "test"),
            "params": t.params,
            "bytes": q.quantized_bytes,
            "float_bytes": q.float_bytes,
            "fell_back": fell_back(q),
        }
    for t in front_c.trials:
        key = f"c{t.number}"
        row: dict[str, Any] = {
            "front": "c",
            "trial": t.number,
            "precision": "int8" if t.quantized else "float",
            "val": t.score,
            "test": t.test_score,
            "params": t.params,
        }
        if t.quantized:
            exported = t.export_quantized(work / f"{key}.int8.onnx")
            timed[key] = exported.model
            row |= {
                "test_exported": exported.test_score,
                "within_tolerance": exported.within_tolerance,
                "bytes": exported.model.quantized_bytes,
                "float_bytes": exported.model.float_bytes,
                "fell_back": fell_back(exported.model),
            }
        else:
            timed[key] = t.model
        candidates[key] = row
    console.print(f"timing {len(timed)} models side by side ...")
    rounds, repeats = (10, 5) if args.task == "mnist1d" else (3, 2)
    medians = compare_latency(
        timed, x, backend="onnxruntime", rounds=rounds, repeats=repeats, warmup=2, threads=1
    )
    base_ms, base_val, base_test = (
        medians["dense"],
        candidates["dense"]["val"],
        candidates["dense"]["test"],
    )
    for key, row in candidates.items():
        row["latency_ms"] = medians[key]
        row["speedup"] = base_ms / medians[key]

    fronts: dict[str, list[str]] = {
        "a": [k for k, r in candidates.items() if r["front"] == "a"],
        "c": [k for k, r in candidates.items() if r["front"] == "c"],
    }
    quantized_a = [k for k, r in candidates.items() if r["front"] == "b"]
    losses = np.array([[-candidates[k]["val"], candidates[k]["latency_ms"]] for k in quantized_a])
    fronts["b"] = [k for k, keep in zip(quantized_a, pareto_mask(losses), strict=True) if keep]

    def hv(keys: list[str], score: str) -> float:
        base = base_test if score == "test" else base_val
        points = np.array(
            [[-candidates[k][score] / base, candidates[k]["latency_ms"] / base_ms] for k in keys]
        )
        return hypervolume(points, REFERENCE) if len(points) else 0.0

    def best(keys: list[str], speedup: float) -> str | None:
        fast = [k for k in keys if candidates[k]["speedup"] >= speedup]
        return max(fast, key=lambda k: candidates[k]["val"]) if fast else None

    summary: dict[str, Any] = {}
    for name in ("a", "b", "c"):
        summary[name] = {
            "members": fronts[name],
            "hv_test": hv(fronts[name], "test"),
            "hv_validation": hv(fronts[name], "val"),
            "best_2x": best(fronts[name], 2.0),
            "best_3x": best(fronts[name], 3.0),
        }
    elapsed = time.perf_counter() - started
    labels = {"a": "(a) pruning only", "b": "(b) pruning, then int8", "c": "(c) joint search"}
    table = Table(title=f"{args.task}: three fronts from {trials} trials each (test figures)")
    for col in (
        "front",
        "members",
        "test HV",
        "val HV",
        "best >= 2x (val-chosen)",
        "best >= 3x (val-chosen)",
    ):
        table.add_column(col)

    def cell(key: str | None) -> str:
        if key is None:
            return "none"
        r = candidates[key]
        return (
            f"{key}: {r['speedup']:.2f}x, test {r['test']:.4f} "
            f"({100 * r['test'] / base_test:.1f} % of dense)"
        )

    for name in ("a", "b", "c"):
        s = summary[name]
        table.add_row(
            labels[name],
            str(len(s["members"])),
            f"{s['hv_test']:.4f}",
            f"{s['hv_validation']:.4f}",
            cell(s["best_2x"]),
            cell(s["best_3x"]),
        )
    console.print(table)
    members = Table(title="every front member (latency from one interleaved run)")
    for col in ("model", "precision", "val", "test", "speed-up", "params", "size on disk"):
        members.add_column(col)
    for key, r in candidates.items():
        size = size_text(r)
        precision = r.get(
            "precision", "int8" if r["front"] == "b" or key == "dense int8" else "float"
        )
        members.add_row(
            key,
            precision,
            f"{r['val']:.4f}",
            f"{r['test']:.4f}",
            f"{r['speedup']:.2f}x",
            str(r.get("params", "")),
            size,
        )
    console.print(members)
    header = {
        "task": args.task,
        "trials": trials,
        "recover_steps": recover,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread",
        "torch": torch.__version__,
        "dense_latency_ms": base_ms,
        "dense_val": base_val,
        "dense_test": base_test,
        "search_seconds": {"a": seconds_a, "c": seconds_c},
        "int8_trials_in_c": sum(1 for t in front_c.completed if t.quantized),
        "completed_in_c": len(front_c.completed),
        "wall_seconds": elapsed,
        "quantize": quantize.to_dict(),
    }
    console.print(header)
    if args.quick and not args.out:
        return 0
    out = Path(args.out) if args.out else RESULTS / f"quant_{args.task}.md"
    out.write_text(markdown(summary, candidates, header, labels))
    out.with_suffix(".json").write_text(
        json.dumps({"header": header, "summary": summary, "candidates": candidates}, indent=1)
    )
    console.print(f"wrote {out}")
    return 0


def markdown(
    summary: dict[str, Any],
    candidates: dict[str, Any],
    header: dict[str, Any],
    labels: dict[str, str],
) -> str:
    base_test = header["dense_test"]

    def cell(key: str | None) -> str:
        if key is None:
            return "none"
        r = candidates[key]
        return f"{key}: {r['speedup']:.2f}x, {100 * r['test'] / base_test:.1f} % of dense test"

    lines = [
        f"# Quantization in the search: {header['task']}",
        "",
        f"`python bench/quant.py --task {header['task']} --trials {header['trials']} --recover "
        f"{header['recover_steps']}`; each trial distilled {header['recover_steps']} steps, "
        f"{header['trials']} trials per search, "
        f"{header['machine']}, torch {header['torch']}; dense model: validation "
        f"{header['dense_val']:.4f}, test {header['dense_test']:.4f}, "
        f"{header['dense_latency_ms']:.2f} ms in onnxruntime. Joint search: "
        f"{header['int8_trials_in_c']} of {header['completed_in_c']} trials int8. Wall time "
        f"{header['wall_seconds'] / 60:.0f} min.",
        "",
        "| front | members | test hypervolume | validation hypervolume | best >= 2x (chosen on validation) | best >= 3x |",  # noqa: E501
        "|---|---|---|---|---|---|",
    ]
    for name in ("a", "b", "c"):
        s = summary[name]
        lines.append(
            f"| {labels[name]} | {len(s['members'])} | {s['hv_test']:.4f} | "
            f"{s['hv_validation']:.4f} | {cell(s['best_2x'])} | {cell(s['best_3x'])} |"
        )
    lines += [
        "",
        "Hypervolume of (test or validation score / dense, latency / dense latency), reference "
        "(0.5, 1.0); latency of every model from one interleaved onnxruntime run.",
        "",
        "| model | front | val | test | speed-up | params | size on disk | layers left in float |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in candidates.items():
        size = size_text(r)
        fell = "; ".join(r.get("fell_back", [])[:4]) or ("none" if r.get("bytes") else "")
        lines.append(
            f"| {key} | {r['front']} | {r['val']:.4f} | {r['test']:.4f} | {r['speedup']:.2f}x | "
            f"{r.get('params', '')} | {size} | {fell} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
