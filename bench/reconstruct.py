"""Reconstruction instead of retraining: one-shot pruning at ratio 0.5, then ``ns.reconstruct``.

    python bench/reconstruct.py            # MiniLM (64, 128, 256 texts), digits and MNIST-1D
    python bench/reconstruct.py --quick    # fewer texts and queries: a smoke run (writes nothing
                                           # unless --out is given)

Three models, each pruned one-shot at ratio 0.5 with ``ns.prune`` (no training anywhere):

* ``minilm``: the real all-MiniLM-L6-v2 sentence encoder (``netsculpt.tasks.minilm``); half
  the attention heads and half the MLP neurons of every layer go (the residual width stays).
  Calibration: the first 64 / 128 / 256 texts (queries and documents) of the task's
  **train** part, batched 32 at a time by length so that little padding is computed (padded
  tokens are left out of the fit anyway). Score: recall@1 on the **test** part (256 queries
  against their 256 documents).
* ``digits``: the task's pretrained DigitsCNN (conv + batch norm, a residual block, a
  concatenation); ``mnist1d``: the task's pretrained ResNet1D (1-D convolutions, residual
  blocks). Calibration: 16 batches of 32 training inputs (512). Score: test accuracy.

For each: the dense model, the one-shot pruned model, then bias compensation
(``method="bias"``), the least-squares refit with the default ``ReconstructConfig()``
(sequential, damping 1e-2) at each calibration size, and the refit with the damping
(``--dampings``) that scores best on the **validation** split with the most calibration
data, used at every size; the wall time of ``ns.reconstruct`` on one thread. Only the
reported scores read the test split. The table is printed and written to
``bench/results/reconstruct.md`` (+ ``.json``, which also holds the validation score of
each damping).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import netsculpt as ns

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)


def text_batches(task: Any, n: int, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` texts of the train part, sorted by length, padded per batch."""
    texts = [t for p in task.train_pairs for t in (p.query, p.document)][:n]
    ids = task.tokenizer(texts, truncation=True, max_length=task.seq_len)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [ids[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for k, r in enumerate(rows):
            input_ids[k, : len(r)] = torch.tensor(r)
            mask[k, : len(r)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": mask})
    return batches


def _repair(
    small: torch.nn.Module, model: torch.nn.Module, calib: list[Any], config: Any
) -> tuple[torch.nn.Module, Any, float]:
    repaired = copy.deepcopy(small)
    started = time.perf_counter()
    result = ns.reconstruct(repaired, model, calib, config)
    return repaired, result, time.perf_counter() - started


def run_case(
    name: str,
    task: Any,
    model: torch.nn.Module,
    example: Any,
    calibs: dict[str, list[Any]],
    metric: str,
    dampings: tuple[float, ...],
    scopes: tuple[str, ...] = ("inputs",),
    importance: str = "magnitude",
) -> list[dict[str, Any]]:
    """Dense, one-shot, bias compensation, the default refit at each calibration size, and
    the refit with the damping that scores best on the validation split (chosen with the
    most calibration data, then used at every size)."""
    rows: list[dict[str, Any]] = []
    dense = task.evaluate(model, "test")
    rows.append(dict(model=name, step="dense", calib="", score=dense, seconds=None))
    console.print(f"[bold]{name}[/]: dense {metric} {dense:.4f}")
    started = time.perf_counter()
    small = ns.prune(model, example, ratio=0.5, importance=importance)
    prune_s = time.perf_counter() - started
    params = (ns.count_params(small), ns.count_params(model))
    one_shot = task.evaluate(small, "test")
    step = f"one-shot {importance} 0.5 ({params[0] / params[1]:.0%} of parameters)"
    rows.append(dict(model=name, step=step, calib="", score=one_shot, seconds=prune_s))
    console.print(f"  one-shot {one_shot:.4f} ({params[0]:,} of {params[1]:,} parameters)")
    most = list(calibs)[-1]

    def add(label: str, step: str, repaired: torch.nn.Module, result: Any, seconds: float) -> None:
        score = task.evaluate(repaired, "test")
        methods = sorted({r.method for r in result.layers})
        before = _mean([r.error_before for r in result.layers])
        after = _mean([r.error_after for r in result.layers])
        rows.append(
            dict(
                model=name,
                step=step,
                calib=label,
                score=score,
                seconds=seconds,
                layers=len(result.layers),
                methods=methods,
                mean_error_before=before,
                mean_error_after=after,
            )
        )
        console.print(
            f"  {step:32s} {label:>10s}: {score:.4f} in {seconds:.1f} s ({len(result.layers)} "
            f"layers, {'/'.join(methods)}; mean layer error {before:.3f} -> {after:.3f})"
        )

    add(
        most,
        "+ reconstruct, bias",
        *_repair(small, model, calibs[most], ns.ReconstructConfig(method="bias")),
    )
    validation: dict[str, dict[str, float]] = {}
    for scope in scopes:
        base = ns.ReconstructConfig(scope=scope)  # type: ignore[arg-type]
        name_ = "" if scope == "inputs" else f", scope={scope!r}"
        for label, calib in calibs.items():
            add(
                label, f"+ reconstruct, refit (default{name_})", *_repair(small, model, calib, base)
            )
        # the damping: chosen on the validation split, with the most calibration data
        scores: dict[float, float] = {}
        kept: dict[float, tuple[torch.nn.Module, Any, float]] = {}
        for damping in dampings:
            config = dataclasses.replace(base, damping=damping)
            kept[damping] = _repair(small, model, calibs[most], config)
            scores[damping] = task.evaluate(kept[damping][0])
            console.print(f"  {scope} damping {damping:g}: validation {scores[damping]:.4f}")
        validation[scope] = {f"{d:g}": v for d, v in scores.items()}
        best = max(dampings, key=lambda d: (scores[d], -abs(math.log10(d / 1e-2))))
        step = f"+ reconstruct, refit (damping {best:g}{name_}, chosen on validation)"
        for label, calib in calibs.items():
            if label == most:
                add(label, step, *kept[best])
            else:
                config = dataclasses.replace(base, damping=best)
                add(label, step, *_repair(small, model, calib, config))
    for row in rows:
        row["of_dense"] = row["score"] / dense if dense else None
        row["metric"] = metric
        row["validation_by_damping"] = validation
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="one-shot pruning at ratio 0.5, then ns.reconstruct (no training)")
    for col in (
        "model",
        "step",
        "calibration",
        "test score",
        "% of dense",
        "seconds",
        "layer error",
    ):
        t.add_column(col, justify="right" if col not in ("model", "step") else "left")
    for r in rows:
        t.add_row(*_cells(r))
    return t


def _cells(r: dict[str, Any]) -> list[str]:
    seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
    error = (
        f"{r['mean_error_before']:.3f} -> {r['mean_error_after']:.3f}"
        if "mean_error_after" in r
        else ""
    )
    return [
        r["model"],
        r["step"],
        r["calib"],
        f"{r['metric']} {r['score']:.4f}",
        f"{100 * r['of_dense']:.1f}",
        seconds,
        error,
    ]


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [
        "## Reconstruction instead of retraining",
        "",
        header,
        "",
        "| model | step | calibration | test score | % of dense | seconds | mean layer error |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r)) + " |")
    lines += ["", "Validation score of the refit by damping (most calibration data):", ""]
    seen: set[str] = set()
    for r in rows:
        if r["model"] in seen or not r.get("validation_by_damping"):
            continue
        seen.add(r["model"])
        by_scope = r["validation_by_damping"]
        if by_scope and not isinstance(next(iter(by_scope.values())), dict):
            by_scope = {"inputs": by_scope}  # a report written before scopes existed
        for scope, by_damping in by_scope.items():
            scores = ", ".join(f"{d}: {v:.4f}" for d, v in by_damping.items())
            lines.append(f"- {r['model']}, scope {scope!r} ({r['metric']}): {scores}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts and queries")
    parser.add_argument("--models", default="minilm,digits,mnist1d")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--dampings",
        default="0.01,0.1,0.3,1,3",
        help="ridge dampings tried; the best on the validation split is reported on test",
    )
    parser.add_argument(
        "--scopes", default="inputs,changed", help="ReconstructConfig scopes, each reported"
    )
    parser.add_argument("--out", default=None, help="markdown report (default: bench/results)")
    parser.add_argument(
        "--from-json", default=None, metavar="PATH", help="rewrite the report from a saved .json"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        out = Path(args.out) if args.out else RESULTS / "reconstruct.md"
        out.write_text(markdown(saved["rows"], saved["header"]))
        console.print(f"wrote {out}")
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    names = args.models.split(",")
    dampings = tuple(float(d) for d in args.dampings.split(","))
    scopes = tuple(args.scopes.split(","))
    if "minilm" in names:
        from netsculpt.tasks.minilm import MiniLMTask

        task = MiniLMTask(n_eval=64 if args.quick else 256)
        model = task.pretrained_model().eval()
        example = {k: v[:4] for k, v in task.example_inputs().items()}
        sizes = (32,) if args.quick else (64, 128, 256)
        calibs = {f"{n} texts": text_batches(task, n) for n in sizes}
        rows += run_case("MiniLM-L6", task, model, example, calibs, "recall@1", dampings, scopes)
    for name in ("digits", "mnist1d"):
        if name not in names:
            continue
        task = ns.get_task(name)
        model = task.pretrained_model().eval()
        n = 4 if args.quick else 16
        calibs = {f"{n * 32} inputs": task.calib_batches(n)}
        rows += run_case(
            name, task, model, task.example_inputs(), calibs, "accuracy", dampings, scopes
        )
    wall = time.perf_counter() - started
    console.print(table(rows))
    header = (
        f"Generated by `python bench/reconstruct.py{' --quick' if args.quick else ''}` "
        f"(torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
        f"{wall / 60:.1f} min wall time on a 2-core machine shared with other work). Each model "
        f"is pruned one-shot at ratio 0.5 by magnitude (`ns.prune`), then repaired by "
        f"`ns.reconstruct`: `method='bias'`, the default `ReconstructConfig()` (least-squares "
        f"refit, sequential, damping 1e-2), and the refit with the damping of {dampings} that "
        f"scored best on the validation split (with the most calibration data); no gradient "
        f"step anywhere. Calibration reads the train split, the choice the validation split, "
        f"the reported scores the test split. "
        f"'seconds' is the wall time of `ns.reconstruct` (of `ns.prune` on the one-shot row); "
        f"'mean layer error' is the mean, over the layers whose input width was pruned, of the "
        f"relative output error on the calibration data before -> after."
    )
    if args.out or not args.quick:
        out = Path(args.out) if args.out else RESULTS / "reconstruct.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(rows, header))
        saved = {"header": header, "rows": rows}
        out.with_suffix(".json").write_text(json.dumps(saved, indent=1, default=str))
        console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
